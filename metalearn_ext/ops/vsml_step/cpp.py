"""Fakes and autograd for the C++/CUDA op torch.ops.metalearn_ext.vsml_step (kernels in metalearn_ext._C)."""
from __future__ import annotations

import torch
from torch import Tensor

from metalearn_ext.ops.vsml_step import autograd

_registered = False


def register() -> None:
    """Registers fakes and autograd once, after metalearn_ext._C has defined the schemas."""
    global _registered
    if not _registered:
        _registered = True
        autograd.register("metalearn_ext::vsml_step", "metalearn_ext::vsml_step_backward",
                          lambda *args: torch.ops.metalearn_ext.vsml_step_backward(*args))


def vsml_step_cpp(
    h: Tensor, c: Tensor, fwd_in: Tensor, bwd_in: Tensor, weight: Tensor, bias: Tensor, ticks: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The compiled op (C++ on CPU tensors, CUDA on GPU tensors); differentiable."""
    return tuple(torch.ops.metalearn_ext.vsml_step(h, c, fwd_in, bwd_in, weight, bias, ticks))
