"""What only the Triton backends of content_read and mann_memory_step have: their own custom ops (opcheck)
and their dtype errors. Correctness against the reference on every backend lives in test_content_read.py
and test_mann_memory_step.py.

Runs on a CUDA GPU when there is one, else on CPU under the Triton interpreter (TRITON_INTERPRET=1, set
before anything imports triton). Shapes stay tiny so the interpreter finishes in seconds.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from metalearn_ext.ops import triton_support
from metalearn_ext.ops.content_read import inputs as read_inputs
from metalearn_ext.ops.mann_memory_step import inputs as step_inputs

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
_OK, _WHY = triton_support.supports(DEVICE)
pytestmark = [pytest.mark.triton, pytest.mark.skipif(not _OK, reason=f"Triton cannot run on {DEVICE}: {_WHY}")]


def test_content_read_opcheck():
    from metalearn_ext.ops.content_read import triton as ct

    for with_beta in (False, True):
        memory, keys, *beta = [x.requires_grad_(True) for x in read_inputs.make_inputs(2, 3, 5, 4, with_beta=with_beta,
                                                                                      device=DEVICE)]
        torch.library.opcheck(ct._content_read_triton_op, (memory, keys, beta[0] if beta else None))


def test_mann_memory_step_opcheck():
    from metalearn_ext.ops.mann_memory_step import triton as mt

    inputs = [x.requires_grad_(True) for x in step_inputs.make_inputs(2, 3, 6, 4, device=DEVICE)]
    torch.library.opcheck(mt._mann_memory_step_triton_op, (*inputs, 0.95))


def test_float32_only():
    from metalearn_ext.ops.content_read.triton import content_read_triton
    from metalearn_ext.ops.mann_memory_step.triton import mann_memory_step_triton

    with pytest.raises(ValueError, match="keys must be float32, got torch.float64"):
        memory, keys = read_inputs.make_inputs(1, 2, 3, 4, with_beta=False, device=DEVICE)
        content_read_triton(memory, keys.double())
    with pytest.raises(ValueError, match="memory must be float32, got torch.float64"):
        mann_memory_step_triton(*step_inputs.make_inputs(1, 2, 3, 4, dtype=torch.float64, device=DEVICE))
