"""Fake (shape-only) kernels and autograd shared by every compiled vsml_step op (C++/CUDA and Triton).

The backward recomputes from the saved inputs, so only the six inputs are saved.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def fake_forward(h, c, fwd_in, bwd_in, weight, bias, ticks):
    T, A, B, N = h.shape
    return h.new_empty(h.shape), h.new_empty(h.shape), h.new_empty((T, B, N)), h.new_empty((T, A, N))


def fake_backward(grad_h, grad_c, grad_fwd_mean, grad_bwd_mean, h, c, fwd_in, bwd_in, weight, bias, ticks):
    return tuple(t.new_empty(t.shape) for t in (h, c, fwd_in, bwd_in, weight, bias))


def register(forward_op: str, backward_op: str, backward: Callable[..., tuple[Tensor, ...]]) -> None:
    """Registers the fakes of both ops and the autograd of `forward_op`, whose backward calls `backward`
    (grad_h, grad_c, grad_fwd_mean, grad_bwd_mean, h, c, fwd_in, bwd_in, weight, bias, ticks)."""
    torch.library.register_fake(forward_op)(fake_forward)
    torch.library.register_fake(backward_op)(fake_backward)

    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        *tensors, ticks = inputs
        ctx.save_for_backward(*tensors)
        ctx.ticks = ticks

    def backward_fn(ctx: Any, grad_h, grad_c, grad_fwd_mean, grad_bwd_mean):
        h, c, fwd_in, bwd_in, weight, bias = ctx.saved_tensors
        T, A, B, N = h.shape
        grads = [  # an output nobody used gets no gradient: it counts as zero
            g if g is not None else h.new_zeros(shape)
            for g, shape in zip((grad_h, grad_c, grad_fwd_mean, grad_bwd_mean), (h.shape, h.shape, (T, B, N), (T, A, N)))
        ]
        return (*backward(*grads, h, c, fwd_in, bwd_in, weight, bias, ctx.ticks), None)

    torch.library.register_autograd(forward_op, backward_fn, setup_context=setup_context)
