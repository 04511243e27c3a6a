"""Fakes of torch.ops.metalearn_ext.blur_forward and its backward, and the double backward.

blur_forward's autograd is C++ (csrc/blur_forward_autograd.cpp): one node per call, no Python. Its backward
kernel is not differentiable; under create_graph=True the C++ node calls blur_forward_backward with autograd
on, and the formula registered here differentiates the reference's gradient instead (after one warning), so
second-order gradients are right rather than missing.
"""
from __future__ import annotations

from typing import Any

import torch

from metalearn_ext.ops.autograd import warn_double_backward
from metalearn_ext.ops.blur_forward.reference import blur_forward_reference
from metalearn_ext.ops.blur_forward.shapes import fake_blur_forward, fake_blur_forward_backward

def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    grad_pred, weights, x, eta, nu, *flags = inputs  # flags: the two activations, x_grad
    ctx.L, ctx.flags = len(weights), flags[:2]
    ctx.save_for_backward(grad_pred, *weights, x, eta, nu)


def _double_backward(ctx: Any, gg_weights, gg_x, gg_eta, gg_nu):
    warn_double_backward("metalearn_ext::blur_forward")
    # Partial derivatives: the reference runs on detached copies, so that what reaches the inputs through the
    # upstream gradient's own graph is left to the outer backward rather than counted here twice.
    leaf = lambda t: t.detach().requires_grad_(t.requires_grad)  # noqa: E731
    up, *inputs = [leaf(t) for t in ctx.saved_tensors]  # grad_pred, weights..., x, eta, nu
    L = ctx.L
    with torch.enable_grad():
        pred = blur_forward_reference(inputs[:L], *inputs[L:], *ctx.flags)
        first = torch.autograd.grad([pred], inputs, [up], create_graph=True, allow_unused=True)
        terms = [(g, gg) for g, gg in zip(first, (*gg_weights, gg_x, gg_eta, gg_nu)) if g is not None and gg is not None
                 and g.requires_grad]
        wrt = [t for t in (up, *inputs) if t.requires_grad]
        grads = torch.autograd.grad([g for g, _ in terms], wrt, [gg for _, gg in terms],
                                    allow_unused=True) if terms and wrt else [None] * len(wrt)
    got = dict(zip(map(id, wrt), grads))  # only what requires grad was differentiated: the rest gets None
    pick = lambda t: got.get(id(t))  # noqa: E731
    return (pick(up), [pick(w) for w in inputs[:L]], *(pick(t) for t in inputs[L:]), None, None, None)


def register() -> None:
    """Called once the extension is loaded (metalearn_ext/_backends.py)."""
    torch.library.register_fake("metalearn_ext::blur_forward")(fake_blur_forward)
    torch.library.register_fake("metalearn_ext::blur_forward_backward")(fake_blur_forward_backward)
    torch.library.register_autograd("metalearn_ext::blur_forward_backward", _double_backward,
                                    setup_context=_setup_context)
