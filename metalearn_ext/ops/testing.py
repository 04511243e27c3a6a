"""Helpers for the tests and benchmarks of any op."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def outputs_and_grads(fn: Callable, inputs: Sequence[Tensor], upstream: Sequence[Tensor]
                      ) -> tuple[list[Tensor], list[Tensor]]:
    """fn's outputs and the gradients of Σ outputs·upstream w.r.t. every input (the inputs untouched)."""
    leaves = [x.detach().requires_grad_(True) for x in inputs]
    out = fn(*leaves)
    grads = torch.autograd.grad(sum((o * u).sum() for o, u in zip(out, upstream)), leaves)
    return [o.detach() for o in out], list(grads)
