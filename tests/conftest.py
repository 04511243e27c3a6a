import os

import pytest
import torch

# Triton kernels run on CPU tensors only under the interpreter, which must be chosen before triton is
# imported. With a GPU present the real compiler runs instead.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def one_thread_for_model_tests(request):
    """Model, method, task, protocol and training tests run many tiny ops, for which two intra-op threads on a small busy
    machine are many times slower than one; kernel tests keep every thread."""
    if request.node.path.parent.name not in ("nn", "train", "methods", "tasks", "evaluate"):
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
