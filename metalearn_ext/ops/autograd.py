"""Fakes and autograd for any compiled op whose backward is a second op (C++/CUDA or Triton).

Convention: `fwd(inputs...) -> outputs` and `bwd(grad of each output..., inputs...) -> grad of each
tensor input`. The backward recomputes from the saved inputs, so only the inputs are saved.

The backward op is a kernel, not a composition of differentiable ops: under create_graph=True (a
double backward, e.g. a MAML outer loop) the backward is recomputed through the op's reference
instead, after one warning, so second-order gradients are right rather than missing.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

_warned_double_backward: set[str] = set()


def _overload(qualname: str) -> torch._ops.OpOverload:
    namespace, name = qualname.split("::")
    return getattr(getattr(torch.ops, namespace), name).default


def _differentiable_backward(qualname: str, reference: Callable, inputs: list, needs: tuple[bool, ...],
                             grads: list[Tensor]) -> tuple[Tensor | None, ...]:
    if qualname not in _warned_double_backward:
        _warned_double_backward.add(qualname)
        warnings.warn(f"{qualname}: its backward kernel is not differentiable, so a double backward "
                      "(create_graph=True) recomputes the gradients through the reference implementation "
                      "(correct, slower)", stacklevel=2)
    wrt = [x for x, need in zip(inputs, needs) if need]
    grads_wrt = iter(torch.autograd.grad(reference(*inputs), wrt, grads, create_graph=True, allow_unused=True))
    return tuple(next(grads_wrt) if need else None for need in needs)


def register(forward: str, backward: str, fake: Callable, reference: Callable) -> None:
    """Registers `fake` for `forward`, a fake for `backward` (gradients shaped like the tensor inputs)
    and the autograd of `forward`, which calls `backward` or, under create_graph=True, `reference`."""
    backward_op = _overload(backward)
    num_outputs = len(_overload(forward)._schema.returns)
    torch.library.register_fake(forward)(fake)

    @torch.library.register_fake(backward)
    def fake_backward(*args):
        return tuple(x.new_empty(x.shape) for x in args[num_outputs:] if isinstance(x, Tensor))

    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        ctx.tensor_at = [i for i, x in enumerate(inputs) if isinstance(x, Tensor)]
        ctx.others = [None if isinstance(x, Tensor) else x for x in inputs]
        ctx.output_like = [(o.shape, o.dtype, o.device) for o in output]
        ctx.save_for_backward(*(inputs[i] for i in ctx.tensor_at))

    def backward_fn(ctx: Any, *grads):
        inputs = list(ctx.others)
        for i, x in zip(ctx.tensor_at, ctx.saved_tensors):
            inputs[i] = x
        grads = [  # an output nobody used may come without a gradient: it counts as zero
            g if g is not None else torch.zeros(shape, dtype=dtype, device=device)
            for g, (shape, dtype, device) in zip(grads, ctx.output_like)
        ]
        if torch.is_grad_enabled():  # only inside a backward with create_graph=True
            return _differentiable_backward(forward, reference, inputs, ctx.needs_input_grad, grads)
        result: list[Tensor | None] = [None] * len(inputs)
        for i, g in zip(ctx.tensor_at, backward_op(*grads, *inputs)):
            result[i] = g
        return tuple(result)

    torch.library.register_autograd(forward, backward_fn, setup_context=setup_context)
