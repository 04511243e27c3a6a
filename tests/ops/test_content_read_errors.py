"""Bad input to content_read raises an error naming the argument and the expected shape: Python and C++."""
from __future__ import annotations

import pytest
import torch

import metalearn_ext
from metalearn_ext.ops.content_read import content_read

B, H, S, W = 2, 3, 5, 4


def good() -> dict:
    return {"memory": torch.randn(B, S, W), "keys": torch.randn(B, H, W), "beta": torch.rand(B, H)}


CASES = {  # case -> (argument to replace, replacement, pattern the message must contain)
    "memory_rank": ("memory", torch.zeros(S, W), r"memory must be a non-empty tensor of shape \(B, S, W\), got \(5, 4\)"),
    "memory_empty": ("memory", torch.zeros(B, 0, W), r"memory must be a non-empty tensor of shape \(B, S, W\)"),
    "keys_rank": ("keys", torch.zeros(B, W), r"keys must be of shape \(B, H, W\) = \(2, H, 4\) .*got \(2, 4\)"),
    "keys_W": ("keys", torch.zeros(B, H, W + 1), r"keys must be of shape \(B, H, W\) = \(2, H, 4\)"),
    "keys_B": ("keys", torch.zeros(B + 1, H, W), r"keys must be of shape \(B, H, W\) = \(2, H, 4\)"),
    "keys_no_heads": ("keys", torch.zeros(B, 0, W), r"keys must be of shape \(B, H, W\)"),
    "beta_H": ("beta", torch.zeros(B, H + 1), r"beta must be None or of shape \(B, H\) = \(2, 3\) \(H from keys\)"),
    "beta_rank": ("beta", torch.zeros(B * H), r"beta must be None or of shape \(B, H\) = \(2, 3\)"),
    "memory_int": ("memory", torch.zeros(B, S, W, dtype=torch.int64), (r"memory must be a floating-point tensor, "
                                                                      r"got torch.int64")),
    "keys_dtype": ("keys", torch.zeros(B, H, W, dtype=torch.float64), (r"keys must be of dtype torch.float32 like "
                                                                      r"memory, got torch.float64")),
    "beta_dtype": ("beta", torch.zeros(B, H, dtype=torch.float64), r"beta must be of dtype torch.float32 like memory"),
}


def call_python(kwargs: dict):
    return content_read(kwargs["memory"], kwargs["keys"], kwargs["beta"])


def call_cpp(kwargs: dict):
    return torch.ops.metalearn_ext.content_read(kwargs["memory"], kwargs["keys"], kwargs["beta"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_python_errors(case):
    arg, value, pattern = CASES[case]
    kwargs = good() | {arg: value}
    with pytest.raises(ValueError, match=pattern):
        call_python(kwargs)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cpp_errors(case):
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)
    arg, value, pattern = CASES[case]
    kwargs = good() | {arg: value}
    with pytest.raises(ValueError, match=pattern):
        call_cpp(kwargs)


def test_cpp_backward_checks_the_upstream_gradients():
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)
    memory, keys, beta = good().values()
    with pytest.raises(ValueError, match=r"grad_weights must be of shape \(B, H, S\) = \(2, 3, 5\)"):
        torch.ops.metalearn_ext.content_read_backward(torch.zeros(B, H, S + 1), torch.zeros(B, H, W), memory, keys,
                                                      beta)
    with pytest.raises(ValueError, match=r"grad_reads must be of shape \(B, H, W\) = \(2, 3, 4\)"):
        torch.ops.metalearn_ext.content_read_backward(torch.zeros(B, H, S), torch.zeros(B, H), memory, keys, None)


def test_cpp_kernel_takes_float32_and_float64_only():
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)
    with pytest.raises(ValueError, match="memory must be float32 or float64, got Half"):
        call_cpp({k: v.half() for k, v in good().items()})


def test_non_tensor_argument():
    with pytest.raises(TypeError, match="keys must be a torch.Tensor"):
        content_read(torch.zeros(B, S, W), [[0.0] * W] * H)
    with pytest.raises(TypeError, match="beta must be a torch.Tensor"):
        content_read(torch.zeros(B, S, W), torch.zeros(B, H, W), 2.0)


@pytest.mark.parametrize("arg", ["keys", "beta"])
def test_mixed_devices(arg):
    kwargs = good()
    kwargs[arg] = kwargs[arg].to("meta")
    with pytest.raises(ValueError, match=f"{arg} must be on device cpu like memory, got meta"):
        call_python(kwargs)


@pytest.mark.cuda
@pytest.mark.parametrize("arg", ["keys", "beta"])
def test_mixed_devices_cuda_kernel(arg):
    """The C++ check: a CUDA memory with a CPU argument reaches the CUDA kernel's host code."""
    if not metalearn_ext.backends()["cuda"].available:
        pytest.skip(metalearn_ext.backends()["cuda"].reason)
    kwargs = {k: v.cuda() for k, v in good().items()} | {arg: good()[arg]}
    with pytest.raises(ValueError, match=f"{arg} must be on device cuda:0 like memory, got cpu"):
        call_cpp(kwargs)
