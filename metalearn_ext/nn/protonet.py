"""Prototypical Networks (Snell et al., NeurIPS 2017) and the few-shot input checks shared with MAML."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn_ext.nn.conv4 import Conv4

__all__ = ["ProtoNet"]


def check_episodes(
    who: str,
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor | None = None,
    *,
    regression: bool = False,
) -> bool:
    """Validate one episode or a batch of episodes; True if batched (a leading E).

    Classification: support_x (S, *X), support_y (S,) integer, query_x (Q, *X), query_y (Q,)
    integer; batched, every tensor gets a leading E. Regression (``regression=True``): the targets
    keep a trailing target dimension, support_y (S, T) / query_y (Q, T) floating, batched (E, S, T).
    """
    for arg, t in (("support_x", support_x), ("support_y", support_y), ("query_x", query_x),
                   ("query_y", query_y)):
        if t is not None and not isinstance(t, Tensor):
            raise ValueError(f"{who}: {arg} must be a Tensor, got {type(t).__name__}")
    target_dims = 1 if regression else 0
    if support_y.dim() not in (1 + target_dims, 2 + target_dims):
        shapes = "(S, T) or (E, S, T)" if regression else "(S,) or (E, S)"
        raise ValueError(f"{who}: support_y must be of shape {shapes}, got {tuple(support_y.shape)}")
    lead = support_y.dim() - 1 - target_dims  # 0 for one episode, 1 for a batch
    points = support_y.shape[: lead + 1]
    if support_x.dim() < lead + 2 or support_x.shape[: lead + 1] != points:
        expected = f"({', '.join(map(str, points))}, ...)"
        raise ValueError(f"{who}: support_x must be of shape {expected} (the leading sizes of support_y), "
                         f"got {tuple(support_x.shape)}")
    sample = support_x.shape[lead + 1:]
    if query_x.dim() != support_x.dim() or query_x.shape[:lead] != support_x.shape[:lead] \
            or query_x.shape[lead + 1:] != sample:
        lead_sizes = [str(support_x.shape[0])] if lead else []
        expected = f"({', '.join(lead_sizes + ['Q'] + [str(d) for d in sample])})"
        raise ValueError(f"{who}: query_x must be of shape {expected} to match support_x "
                         f"{tuple(support_x.shape)}, got {tuple(query_x.shape)}")
    if not support_x.is_floating_point() or not query_x.is_floating_point():
        raise ValueError(f"{who}: support_x and query_x must be floating point, got "
                         f"{support_x.dtype} and {query_x.dtype}")
    if support_x.device != query_x.device or support_y.device != support_x.device:
        raise ValueError(f"{who}: support_x, support_y and query_x must be on one device, got "
                         f"{support_x.device}, {support_y.device}, {query_x.device}")
    if regression:
        if not support_y.is_floating_point():
            raise ValueError(f"{who}: support_y must be floating point for regression, got {support_y.dtype}")
    elif support_y.is_floating_point() or support_y.is_complex() or support_y.dtype == torch.bool:
        raise ValueError(f"{who}: support_y must hold integer class labels (int64), got {support_y.dtype}")
    if query_y is not None:
        expected_y = query_x.shape[: lead + 1] + support_y.shape[lead + 1:]
        if query_y.shape != expected_y:
            raise ValueError(f"{who}: query_y must be of shape {tuple(expected_y)}, got {tuple(query_y.shape)}")
        if query_y.dtype.is_floating_point != support_y.dtype.is_floating_point:
            raise ValueError(f"{who}: query_y must have the kind of dtype support_y has "
                             f"({support_y.dtype}), got {query_y.dtype}")
        if query_y.device != support_x.device:
            raise ValueError(f"{who}: query_y must be on {support_x.device}, got {query_y.device}")
        if query_y.numel() == 0:
            raise ValueError(f"{who}: query_y is empty: a loss needs at least one query")
    return bool(lead)


def infer_n_way(who: str, support_y: Tensor, n_way: int | None) -> int:
    """N: ``n_way`` if given (labels then unchecked, no device sync), else support_y.max() + 1
    after checking that the labels are ≥ 0."""
    if n_way is not None:
        if not isinstance(n_way, int) or isinstance(n_way, bool) or n_way < 1:
            raise ValueError(f"{who}: n_way must be a positive int, got {n_way!r}")
        return n_way
    if support_y.numel() == 0:
        raise ValueError(f"{who}: support_y is empty: an episode needs at least one support example")
    lo, hi = (int(v) for v in torch.aminmax(support_y))
    if lo < 0:
        raise ValueError(f"{who}: support_y must hold labels in 0..N−1, got a label {lo}")
    return hi + 1


class ProtoNet(nn.Module):
    """Prototypical Networks: logits = −‖f(query) − prototype‖², prototype = mean support embedding.

    The few-shot interface (one episode, or E episodes with a leading E):

    * support_x (S, *X) / (E, S, *X) with S = N·K, support_y (S,) / (E, S) int64 in 0..N−1,
    * query_x (Q, *X) / (E, Q, *X) → logits (Q, N) / (E, Q, N).

    *X is whatever the encoder takes per example — (C, H, W) for the default :class:`Conv4`.
    Support and query of all episodes go through the encoder in one call (so an encoder with
    batch norm in training mode normalizes over all of them together, as the original code did).

    Args:
        encoder: maps (B, *X) to (B, D) (or to (B, ...), flattened); default
            ``Conv4(in_channels, hidden)`` with ordinary batch norm.
        in_channels, hidden: for the default encoder only.
    """

    def __init__(self, encoder: nn.Module | None = None, in_channels: int = 1, hidden: int = 64) -> None:
        super().__init__()
        if encoder is not None and not isinstance(encoder, nn.Module):
            raise ValueError(f"ProtoNet: encoder must be an nn.Module or None, got {type(encoder).__name__}")
        self.encoder = encoder if encoder is not None else Conv4(in_channels, hidden)

    def embed(self, x: Tensor) -> Tensor:
        """x (B, *X) -> embeddings (B, D)."""
        z = self.encoder(x)
        return z if z.dim() == 2 else z.flatten(1)

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                n_way: int | None = None) -> Tensor:
        """Logits −(squared Euclidean distance) of each query to each class prototype.

        Shapes in the class docstring; N = ``n_way`` or support_y.max() + 1 (over all episodes).
        A class with no support example (possible with an explicit ``n_way``) gets the zero
        vector as its prototype.
        """
        batched = check_episodes("ProtoNet.predict", support_x, support_y, query_x)
        n = infer_n_way("ProtoNet.predict", support_y, n_way)
        if not batched:
            support_x, support_y, query_x = support_x[None], support_y[None], query_x[None]
        e, s, q = support_x.shape[0], support_x.shape[1], query_x.shape[1]
        sample = support_x.shape[2:]
        z = self.embed(torch.cat([support_x.reshape(e * s, *sample), query_x.reshape(e * q, *sample)]))
        z_support, z_query = z[: e * s].view(e, s, -1), z[e * s:].view(e, q, -1)

        onehot = F.one_hot(support_y.long(), n).to(z.dtype)  # (E, S, N)
        counts = onehot.sum(1).clamp_min(1.0)  # (E, N)
        prototypes = torch.bmm(onehot.transpose(1, 2), z_support) / counts.unsqueeze(-1)  # (E, N, D)
        # Distances do not change under a shift; centring on the support mean keeps the norms
        # small, so ‖q‖² + ‖p‖² − 2 q·p loses less to cancellation (ReLU features are all ≥ 0).
        centre = z_support.mean(1, keepdim=True)
        z_query, prototypes = z_query - centre, prototypes - centre
        sq_query = z_query.pow(2).sum(-1, keepdim=True)  # (E, Q, 1)
        sq_proto = prototypes.pow(2).sum(-1).unsqueeze(1)  # (E, 1, N)
        distances = torch.baddbmm(sq_query + sq_proto, z_query, prototypes.transpose(1, 2), alpha=-2.0)
        logits = -distances.clamp_min(0.0)
        return logits if batched else logits[0]

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                n_way: int | None = None) -> Tensor:
        """Same as :meth:`predict`."""
        return self.predict(support_x, support_y, query_x, n_way=n_way)

    def loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
             n_way: int | None = None) -> tuple[Tensor, Tensor]:
        """(mean cross-entropy over all queries of all episodes (scalar, differentiable),
        accuracy (scalar tensor, detached)). query_y (Q,) / (E, Q) int64 in 0..N−1."""
        check_episodes("ProtoNet.loss", support_x, support_y, query_x, query_y)
        logits = self.predict(support_x, support_y, query_x, n_way=n_way)
        flat = logits.reshape(-1, logits.shape[-1])
        targets = query_y.reshape(-1).long()
        loss = F.cross_entropy(flat, targets)
        accuracy = (flat.detach().argmax(-1) == targets).float().mean()
        return loss, accuracy
