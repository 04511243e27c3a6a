"""The batch a neural process trains on, for task families other than "gp" (whose
:class:`metalearn_ext.data.GPBatch` has the same fields plus its kernel): padded context and
target sets with masks, the targets starting with the context points."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metalearn_ext.data.batch import batch_to

__all__ = ["ContextTargetBatch", "from_support_query"]


@dataclass(frozen=True)
class ContextTargetBatch:
    """Attributes:
        context_x (E, Nc, d_x), context_y (E, Nc, d_y); zero past ``num_context``.
        context_mask (E, Nc) bool.
        target_x (E, Nt, d_x), target_y (E, Nt, d_y): the first ``num_context`` are the context.
        target_mask (E, Nt) bool.
        num_context, num_target (E,) int64.
    """

    context_x: Tensor
    context_y: Tensor
    context_mask: Tensor
    target_x: Tensor
    target_y: Tensor
    target_mask: Tensor
    num_context: Tensor
    num_target: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ContextTargetBatch:
        """The same batch with every tensor on ``device``."""
        return batch_to(self, device, non_blocking)


def from_support_query(support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor) -> ContextTargetBatch:
    """Few-shot regression episodes (support (E, K, d), query (E, Q, d), e.g. sinusoids) as a
    context set (the support) and a target set (support then query), no padding."""
    e, k, q = support_x.shape[0], support_x.shape[1], query_x.shape[1]
    ones = lambda n: torch.ones(e, n, dtype=torch.bool, device=support_x.device)
    count = lambda n: torch.full((e,), n, dtype=torch.int64, device=support_x.device)
    return ContextTargetBatch(support_x, support_y, ones(k), torch.cat([support_x, query_x], 1),
                              torch.cat([support_y, query_y], 1), ones(k + q), count(k), count(k + q))
