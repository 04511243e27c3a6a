"""Bad input to mann_memory_step raises an error naming the argument and the expected shape: Python and C++."""
from __future__ import annotations

import pytest
import torch

import metalearn_ext
from metalearn_ext.ops.mann_memory_step import mann_memory_step
from metalearn_ext.ops.mann_memory_step.inputs import make_inputs

B, H, S, W = 2, 3, 5, 4
NAMES = ["memory", "usage", "read_weights", "keys", "add", "alpha"]


def good() -> dict:
    return dict(zip(NAMES, make_inputs(B, H, S, W)))


CASES = {  # case -> (argument to replace, replacement, pattern the message must contain)
    "memory_rank": ("memory", torch.zeros(S, W), r"memory must be a non-empty tensor of shape \(B, S, W\), got \(5, 4\)"),
    "memory_empty": ("memory", torch.zeros(B, S, 0), r"memory must be a non-empty tensor of shape \(B, S, W\)"),
    "keys_W": ("keys", torch.zeros(B, H, W + 1), r"keys must be of shape \(B, H, W\) = \(2, H, 4\) with 1 <= H <= S = 5"),
    "keys_too_many_heads": ("keys", torch.zeros(B, S + 1, W), r"keys must be of shape .* with 1 <= H <= S = 5"),
    "keys_rank": ("keys", torch.zeros(B, W), r"keys must be of shape \(B, H, W\)"),
    "usage_S": ("usage", torch.zeros(B, S + 1), r"usage must be of shape \(B, S\) = \(2, 5\), got \(2, 6\)"),
    "read_weights_H": ("read_weights", torch.zeros(B, H + 1, S), (r"read_weights must be of shape \(B, H, S\) = "
                                                                 r"\(2, 3, 5\)")),
    "add_W": ("add", torch.zeros(B, H, W - 1), r"add must be of shape \(B, H, W\) = \(2, 3, 4\)"),
    "alpha_rank": ("alpha", torch.zeros(B, H, 1), r"alpha must be of shape \(B, H\) = \(2, 3\), got \(2, 3, 1\)"),
    "memory_int": ("memory", torch.zeros(B, S, W, dtype=torch.int32), (r"memory must be a floating-point tensor, "
                                                                      r"got torch.int32")),
    "usage_dtype": ("usage", torch.zeros(B, S, dtype=torch.float64), (r"usage must be of dtype torch.float32 like "
                                                                     r"memory, got torch.float64")),
    "alpha_dtype": ("alpha", torch.zeros(B, H, dtype=torch.float64), r"alpha must be of dtype torch.float32"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_python_errors(case):
    arg, value, pattern = CASES[case]
    kwargs = good() | {arg: value}
    with pytest.raises(ValueError, match=pattern):
        mann_memory_step(**kwargs)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cpp_errors(case):
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)
    arg, value, pattern = CASES[case]
    kwargs = good() | {arg: value}
    with pytest.raises(ValueError, match=pattern):
        torch.ops.metalearn_ext.mann_memory_step(*[kwargs[n] for n in NAMES], 0.95)


@pytest.mark.parametrize("gamma", [float("nan"), float("inf")])
def test_gamma_must_be_finite(gamma):
    with pytest.raises(ValueError, match="gamma must be a finite float"):
        mann_memory_step(**good(), gamma=gamma)
    if metalearn_ext.backends()["cpp"].available:
        with pytest.raises(ValueError, match="gamma must be a finite float"):
            torch.ops.metalearn_ext.mann_memory_step(*good().values(), gamma)


def test_cpp_backward_checks_the_upstream_gradients():
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)
    grads = [torch.zeros(B, S, W), torch.zeros(B, H, S), torch.zeros(B, H, W), torch.zeros(B, S + 1),
             torch.zeros(B, H, S)]
    with pytest.raises(ValueError, match=r"grad_usage_out must be of shape \(B, S\) = \(2, 5\)"):
        torch.ops.metalearn_ext.mann_memory_step_backward(*grads, *good().values(), 0.95)


def test_non_tensor_argument():
    kwargs = good()
    kwargs["alpha"] = 0.5
    with pytest.raises(TypeError, match="alpha must be a torch.Tensor"):
        mann_memory_step(**kwargs)


def test_mixed_devices_python():
    kwargs = good()
    kwargs["add"] = kwargs["add"].to("meta")
    with pytest.raises(ValueError, match="add must be on device cpu like memory, got meta"):
        mann_memory_step(**kwargs)
