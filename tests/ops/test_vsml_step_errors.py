"""Bad input to vsml_step raises an error naming the argument and the expected shape: Python and C++."""
from __future__ import annotations

import pytest
import torch

import metalearn_ext
from metalearn_ext.ops.vsml_step import vsml_step
from metalearn_ext.ops.vsml_step.inputs import make_inputs

T, A, B, N, M = 2, 3, 4, 8, 2
NAMES = ["h", "c", "fwd_in", "bwd_in", "weight", "bias"]


def good():
    return dict(zip(NAMES, make_inputs(T, A, B, N, M)))


CASES = {  # case -> (argument to replace, replacement, pattern the message must contain)
    "h_rank": ("h", torch.zeros(T, A, B), r"h must be of shape \(T, A, B, N\)"),
    "h_empty": ("h", torch.zeros(T, 0, B, N), r"h must be non-empty"),
    "c_shape": ("c", torch.zeros(T, A, B, N + 1), r"c must be of shape \(T, A, B, N\) = \(2, 3, 4, 8\)"),
    "fwd_in_T": ("fwd_in", torch.zeros(T + 1, A, M), r"fwd_in must be of shape \(T, A, M\)"),
    "fwd_in_A": ("fwd_in", torch.zeros(T, A + 2, M), r"fwd_in must be of shape \(T, A, M\)"),
    "fwd_in_rank": ("fwd_in", torch.zeros(T, A), r"fwd_in must be of shape \(T, A, M\)"),
    "fwd_in_empty": ("fwd_in", torch.zeros(T, A, 0), r"fwd_in must be"),
    "bwd_in_B": ("bwd_in", torch.zeros(T, B + 1, M), r"bwd_in must be of shape \(T, B, M\) = \(2, 4, 2\)"),
    "bwd_in_M": ("bwd_in", torch.zeros(T, B, M + 1), r"bwd_in must be of shape \(T, B, M\) = \(2, 4, 2\)"),
    "weight_rows": ("weight", torch.zeros(4 * N + 1, 2 * M + N), r"weight must be of shape \(4N, 2M\+N\) = \(32, 12\)"),
    "weight_cols": ("weight", torch.zeros(4 * N, 2 * M), r"weight must be of shape \(4N, 2M\+N\) = \(32, 12\)"),
    "weight_T": ("weight", torch.zeros(T + 1, 4 * N, 2 * M + N), r"weight must be of shape .*\(T, 4N, 2M\+N\) = \(2, 32, 12\)"),
    "bias_shape": ("bias", torch.zeros(4 * N - 1), r"bias must be of shape \(4N,\) = \(32\)"),
    "bias_T": ("bias", torch.zeros(T + 3, 4 * N), r"bias must be of shape .*\(T, 4N\) = \(2, 32\)"),
    "dtype_mixed": ("c", torch.zeros(T, A, B, N, dtype=torch.float64), r"c must be of dtype (torch\.)?[Ff]loat"),
    "weight_dtype": ("weight", torch.zeros(4 * N, 2 * M + N, dtype=torch.float64), r"weight must be of dtype"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_python_errors(case):
    arg, value, pattern = CASES[case]
    kwargs = good()
    kwargs[arg] = value
    with pytest.raises(ValueError, match=pattern):
        vsml_step(**kwargs, ticks=1)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cpp_errors(case):
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)
    arg, value, pattern = CASES[case]
    kwargs = good()
    kwargs[arg] = value
    with pytest.raises(ValueError, match=pattern):
        torch.ops.metalearn_ext.vsml_step(*[kwargs[n] for n in NAMES], 1)


def test_ticks_must_be_positive():
    with pytest.raises(ValueError, match="ticks must be"):
        vsml_step(**good(), ticks=0)
    if metalearn_ext.backends()["cpp"].available:
        with pytest.raises(ValueError, match="ticks must be >= 1"):
            torch.ops.metalearn_ext.vsml_step(*good().values(), 0)


def test_non_tensor_argument():
    kwargs = good()
    kwargs["bias"] = [0.0] * (4 * N)
    with pytest.raises(TypeError, match="bias must be a torch.Tensor"):
        vsml_step(**kwargs)


def test_mixed_devices_python():
    kwargs = good()
    kwargs["bwd_in"] = kwargs["bwd_in"].to("meta")
    with pytest.raises(ValueError, match="bwd_in must be on device cpu like h"):
        vsml_step(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for a second real device")
def test_mixed_devices_cpp():
    if not metalearn_ext.backends()["cuda"].available:
        pytest.skip(metalearn_ext.backends()["cuda"].reason)
    kwargs = {k: v.cuda() for k, v in good().items()}
    kwargs["fwd_in"] = kwargs["fwd_in"].cpu()
    with pytest.raises((ValueError, RuntimeError), match="fwd_in"):
        torch.ops.metalearn_ext.vsml_step(*[kwargs[n] for n in NAMES], 1)


def test_cpp_backward_checks_gradient_shapes():
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)
    ins = list(good().values())
    grads = [torch.zeros(T, A, B, N), torch.zeros(T, A, B, N), torch.zeros(T, B + 1, N), torch.zeros(T, A, N)]
    with pytest.raises(ValueError, match=r"grad_fwd_mean must be of shape \(T, B, N\) = \(2, 4, 8\)"):
        torch.ops.metalearn_ext.vsml_step_backward(*grads, *ins, 1)
