"""Fakes and autograd for any compiled op whose backward is a second op (C++/CUDA or Triton).

Convention: `fwd(inputs...) -> outputs` and `bwd(grad of each output..., inputs...) -> grad of each
tensor input`. The backward recomputes from the saved inputs, so only the inputs are saved.

The backward op is a kernel, not a composition of differentiable ops: under create_graph=True (a
double backward, e.g. a MAML outer loop) the backward is recomputed through the op's reference
instead, after one warning, so second-order gradients are right rather than missing.

`register` does all of this from Python. Ops whose first-order autograd is C++ (content_read and
mann_memory_step: csrc/memory_autograd.cpp, as blur_step's) use `register_double_backward` instead: the
fakes, and the autograd of the backward op only, which the C++ node calls under create_graph=True.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

_warned_double_backward: set[str] = set()


def warn_double_backward(qualname: str) -> None:
    """The one warning, once per op and process, that a double backward of ``qualname`` goes through its
    reference (every op whose backward kernel is not differentiable says it this way)."""
    if qualname not in _warned_double_backward:
        _warned_double_backward.add(qualname)
        warnings.warn(f"{qualname}: its backward kernel is not differentiable, so a double backward "
                      "(create_graph=True) recomputes the gradients through the reference implementation "
                      "(correct, slower)", stacklevel=3)


def _overload(qualname: str) -> torch._ops.OpOverload:
    namespace, name = qualname.split("::")
    return getattr(getattr(torch.ops, namespace), name).default


def _differentiable_backward(qualname: str, reference: Callable, inputs: list, needs: tuple[bool, ...],
                             grads: list[Tensor]) -> tuple[Tensor | None, ...]:
    warn_double_backward(qualname)
    wrt = [x for x, need in zip(inputs, needs) if need]
    grads_wrt = iter(torch.autograd.grad(reference(*inputs), wrt, grads, create_graph=True, allow_unused=True))
    return tuple(next(grads_wrt) if need else None for need in needs)


def _register_fakes(forward: str, backward: str, fake: Callable) -> int:
    """Registers `fake` for `forward` and a fake for `backward` (gradients shaped like the tensor inputs);
    the number of outputs of `forward`."""
    num_outputs = len(_overload(forward)._schema.returns)
    torch.library.register_fake(forward)(fake)

    @torch.library.register_fake(backward)
    def fake_backward(*args):
        return tuple(x.new_empty(x.shape) for x in args[num_outputs:] if isinstance(x, Tensor))

    return num_outputs


def register_double_backward(forward: str, backward: str, fake: Callable, reference: Callable) -> None:
    """For an op whose autograd is registered in C++ and calls `backward`: the fakes of both ops, and the
    autograd of `backward` (`bwd(grad of each output..., inputs...)`), which differentiates the reference's
    gradient. The C++ node calls `backward` with autograd on only under create_graph=True."""
    num_outputs = _register_fakes(forward, backward, fake)

    def setup_context(ctx: Any, inputs: tuple, output) -> None:
        ctx.tensor_at = [i for i, x in enumerate(inputs) if isinstance(x, Tensor)]
        ctx.others = [None if isinstance(x, Tensor) else x for x in inputs]
        ctx.save_for_backward(*(inputs[i] for i in ctx.tensor_at))

    def backward_fn(ctx: Any, *gg):
        warn_double_backward(forward)
        gg = [g for item in gg for g in (item if isinstance(item, (list, tuple)) else (item,))]
        # Partial derivatives of the backward op alone: the reference runs on detached copies, so that what
        # reaches the inputs through the upstream gradients' own graph is left to the outer backward.
        args = list(ctx.others)
        for i, x in zip(ctx.tensor_at, ctx.saved_tensors):
            args[i] = x.detach().requires_grad_(True)
        upstream, inputs = args[:num_outputs], args[num_outputs:]
        tensor_inputs = [x for x in inputs if isinstance(x, Tensor)]
        wrt = [(i, args[i]) for i, need in zip(ctx.tensor_at, (ctx.needs_input_grad[i] for i in ctx.tensor_at))
               if need]
        result: list[Tensor | None] = [None] * len(args)
        with torch.enable_grad():
            first = torch.autograd.grad(reference(*inputs), tensor_inputs, upstream, create_graph=True,
                                        allow_unused=True)
            terms = [(f, g) for f, g in zip(first, gg) if f is not None and g is not None and f.requires_grad]
            if not terms or not wrt:
                return tuple(result)
            grads = torch.autograd.grad([f for f, _ in terms], [x for _, x in wrt], [g for _, g in terms],
                                        allow_unused=True)
        for (i, _), g in zip(wrt, grads):
            result[i] = g
        return tuple(result)

    torch.library.register_autograd(backward, backward_fn, setup_context=setup_context)


def register(forward: str, backward: str, fake: Callable, reference: Callable) -> None:
    """Registers `fake` for `forward`, a fake for `backward` (gradients shaped like the tensor inputs)
    and the autograd of `forward`, which calls `backward` or, under create_graph=True, `reference`."""
    backward_op = _overload(backward)
    _register_fakes(forward, backward, fake)

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
