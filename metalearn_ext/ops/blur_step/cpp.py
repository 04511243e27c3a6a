"""Fakes of torch.ops.metalearn_ext.blur_step and its backward, and the double backward.

blur_step's autograd is C++ (csrc/blur_step_autograd.cpp): one node per learning step, no Python. Its
backward kernel is not differentiable; under create_graph=True the C++ node calls blur_step_backward with
autograd on, and the formula registered here differentiates the reference's gradient instead (after one
warning), so second-order gradients are right rather than missing.
"""
from __future__ import annotations

from typing import Any

import torch

from metalearn_ext.ops.autograd import warn_double_backward
from metalearn_ext.ops.blur_step.reference import blur_step_reference
from metalearn_ext.ops.blur_step.shapes import fake_blur_step, fake_blur_step_backward

def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    grad_weights, grad_pred, weights, *rest = inputs  # rest: x, code, the genome, the flags, x_grad
    ctx.L, ctx.flags, ctx.non_tensors = len(weights), rest[10:14], len(rest) - 10
    ctx.grad_present = [g is not None for g in (*grad_weights, grad_pred)]
    upstream = [g for g in (*grad_weights, grad_pred) if g is not None]
    ctx.save_for_backward(*upstream, *weights, *rest[:10])


def _double_backward(ctx: Any, gg_weights, *gg_rest):
    warn_double_backward("metalearn_ext::blur_step")
    # Partial derivatives: the reference runs on detached copies, so that what reaches the inputs through
    # the upstream gradients' own graph is left to the outer backward rather than counted here twice.
    leaf = lambda t: t.detach().requires_grad_(t.requires_grad)  # noqa: E731
    saved = iter([leaf(t) for t in ctx.saved_tensors])
    upstream = [next(saved) if present else None for present in ctx.grad_present]
    inputs = list(saved)  # weights..., x, code, the eight genes
    L = ctx.L
    with torch.enable_grad():
        new, pred = blur_step_reference(inputs[:L], *inputs[L:], *ctx.flags)
        pairs = [(o, u) for o, u in zip((*new, pred), upstream) if u is not None]
        first = torch.autograd.grad([o for o, _ in pairs], inputs, [u for _, u in pairs], create_graph=True,
                                    allow_unused=True)
        terms = [(g, gg) for g, gg in zip(first, (*gg_weights, *gg_rest)) if g is not None and gg is not None
                 and g.requires_grad]
        wrt = [t for t in (*upstream, *inputs) if t is not None and t.requires_grad]
        grads = torch.autograd.grad([g for g, _ in terms], wrt, [gg for _, gg in terms],
                                    allow_unused=True) if terms and wrt else [None] * len(wrt)
    got = dict(zip(map(id, wrt), grads))  # only what requires grad was differentiated: the rest gets None
    pick = lambda t: None if t is None else got.get(id(t))  # noqa: E731
    g_up = [pick(u) for u in upstream]
    return (g_up[:L], g_up[L], [pick(w) for w in inputs[:L]], *(pick(t) for t in inputs[L:]),
            *(None for _ in range(ctx.non_tensors)))


def register() -> None:
    """Called once the extension is loaded (metalearn_ext/_backends.py)."""
    torch.library.register_fake("metalearn_ext::blur_step")(fake_blur_step)
    torch.library.register_fake("metalearn_ext::blur_step_backward")(fake_blur_step_backward)
    torch.library.register_autograd("metalearn_ext::blur_step_backward", _double_backward,
                                    setup_context=_setup_context)
