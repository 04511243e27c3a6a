"""Fake (shape-only) kernels and autograd for the C++/CUDA op torch.ops.metalearn_ext.vsml_step."""
from __future__ import annotations

import torch
from torch import Tensor

_registered = False


def register() -> None:
    """Registers fakes and autograd once; the schema and kernels come from metalearn_ext._C."""
    global _registered
    if _registered:
        return
    _registered = True

    @torch.library.register_fake("metalearn_ext::vsml_step")
    def _vsml_step_fake(h, c, fwd_in, bwd_in, weight, bias, ticks):
        T, A, B, N = h.shape
        return h.new_empty(h.shape), h.new_empty(h.shape), h.new_empty((T, B, N)), h.new_empty((T, A, N))

    @torch.library.register_fake("metalearn_ext::vsml_step_backward")
    def _vsml_step_backward_fake(gh, gc, gfm, gbm, h, c, fwd_in, bwd_in, weight, bias, ticks):
        return tuple(t.new_empty(t.shape) for t in (h, c, fwd_in, bwd_in, weight, bias))

    def setup_context(ctx, inputs, output):
        *tensors, ticks = inputs
        ctx.save_for_backward(*tensors)
        ctx.ticks = ticks

    def backward(ctx, grad_h, grad_c, grad_fwd_mean, grad_bwd_mean):
        h, c, fwd_in, bwd_in, weight, bias = ctx.saved_tensors
        T, A, B, N = h.shape
        grads = [
            g if g is not None else h.new_zeros(shape)
            for g, shape in zip((grad_h, grad_c, grad_fwd_mean, grad_bwd_mean), (h.shape, h.shape, (T, B, N), (T, A, N)))
        ]
        out = torch.ops.metalearn_ext.vsml_step_backward(*grads, h, c, fwd_in, bwd_in, weight, bias, ctx.ticks)
        return (*out, None)

    torch.library.register_autograd("metalearn_ext::vsml_step", backward, setup_context=setup_context)


def vsml_step_cpp(
    h: Tensor, c: Tensor, fwd_in: Tensor, bwd_in: Tensor, weight: Tensor, bias: Tensor, ticks: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The compiled op (C++ on CPU tensors, CUDA on GPU tensors); differentiable."""
    return tuple(torch.ops.metalearn_ext.vsml_step(h, c, fwd_in, bwd_in, weight, bias, ticks))
