import os

import torch

# Triton kernels run on CPU tensors only under the interpreter, which must be chosen before triton is
# imported. With a GPU present the real compiler runs instead.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
