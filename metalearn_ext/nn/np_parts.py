"""Pieces the neural processes (CNP, latent NP, ANP) share: input checks, the masked mean over a
context set, masked multi-head attention, the encoders and the Gaussian decoder.

Context sets of different sizes are padded to a common N_c and come with a (B, N_c) bool mask,
True for real points. Padded entries never influence an output: they are zeroed before any layer
sees them (so NaN padding cannot leak), left out of every mean, and given zero attention weight.
A row with no context point at all aggregates to the zero vector (documented by each model).

Packed sets: the pointwise MLPs (set encoders, the ANP's embedding of x) run on the real points
only, gathered into one (P, ·) matrix, and are summed back per row (means) or scattered back into
the padded layout (attention), instead of running on every padded slot: padded GP batches are
about half padding, so this about halves the work (benchmarks/bench_np.py). The result equals the
padded computation up to float rounding.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn_ext.nn.mlp import MLP

__all__ = ["DeterministicEncoder", "GaussianDecoder", "LatentEncoder", "MaskedMultiheadAttention", "check_context",
           "check_targets", "masked_mean", "packed_mean", "packed_pointwise"]

SIGMA_FLOOR = 0.1  # σ = 0.1 + 0.9 · squash(s): a floor keeps the likelihood bounded early in training


def _check_rank3(who: str, name: str, t: object, last: int | None) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{who}: {name} must be a Tensor, got {type(t).__name__}")
    if t.dim() != 3 or (last is not None and t.shape[-1] != last):
        want = f"(B, N, {last})" if last is not None else "(B, N, d)"
        raise ValueError(f"{who}: {name} must be of shape {want}, got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{who}: {name} must be floating point, got {t.dtype}")
    return t


def _check_mask(who: str, name: str, mask: Tensor | None, like: Tensor) -> Tensor:
    b, n = like.shape[:2]
    if mask is None:
        return torch.ones(b, n, dtype=torch.bool, device=like.device)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{who}: {name} must be a bool Tensor of shape ({b}, {n}) (B, N), got "
                        f"{mask.dtype if isinstance(mask, Tensor) else type(mask).__name__}")
    if mask.shape != (b, n):
        raise ValueError(f"{who}: {name} must be of shape ({b}, {n}) (B, N), got {tuple(mask.shape)}")
    return mask


def _check_finite(who: str, name: str, t: Tensor, mask: Tensor) -> Tensor:
    """``t`` with padded rows zeroed; ValueError if a real entry is NaN or infinite."""
    real = mask[..., None].expand_as(t)
    if not bool(torch.isfinite(t[real]).all()):
        raise ValueError(f"{who}: {name} holds NaN or infinite values at real (unmasked) points")
    return torch.where(real, t, torch.zeros((), dtype=t.dtype, device=t.device))


def check_context(who: str, x_context: Tensor, y_context: Tensor, x_target: Tensor, context_mask: Tensor | None,
                  x_dim: int, y_dim: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Validated (x_context (B, Nc, d_x), y_context (B, Nc, d_y), x_target (B, Nt, d_x), mask (B, Nc)),
    the padded context points zeroed; errors name the argument and the expected shape."""
    _check_rank3(who, "x_context", x_context, x_dim)
    _check_rank3(who, "y_context", y_context, y_dim)
    _check_rank3(who, "x_target", x_target, x_dim)
    if y_context.shape[:2] != x_context.shape[:2]:
        raise ValueError(f"{who}: y_context must be of shape ({x_context.shape[0]}, {x_context.shape[1]}, {y_dim}) "
                         f"(B, Nc, d_y) to match x_context {tuple(x_context.shape)}, got {tuple(y_context.shape)}")
    if x_target.shape[0] != x_context.shape[0]:
        raise ValueError(f"{who}: x_target must be of shape ({x_context.shape[0]}, Nt, {x_dim}) (the B of x_context), "
                         f"got {tuple(x_target.shape)}")
    if len({x_context.device, y_context.device, x_target.device}) != 1:
        raise ValueError(f"{who}: x_context, y_context and x_target must be on one device")
    mask = _check_mask(who, "context_mask", context_mask, x_context)
    xc = _check_finite(who, "x_context", x_context, mask)
    yc = _check_finite(who, "y_context", y_context, mask)
    xt = _check_finite(who, "x_target", x_target, torch.ones(x_target.shape[:2], dtype=torch.bool,
                                                                 device=x_target.device))
    return xc, yc, xt, mask


def check_targets(who: str, x_target: Tensor, y_target: Tensor, target_mask: Tensor | None, y_dim: int
                  ) -> tuple[Tensor, Tensor]:
    """Validated (y_target (B, Nt, d_y) with padded rows zeroed, target_mask (B, Nt)); at least one
    real target per row (a loss over no target would be 0/0)."""
    _check_rank3(who, "y_target", y_target, y_dim)
    if y_target.shape[:2] != x_target.shape[:2]:
        raise ValueError(f"{who}: y_target must be of shape ({x_target.shape[0]}, {x_target.shape[1]}, {y_dim}) "
                         f"(B, Nt, d_y) to match x_target {tuple(x_target.shape)}, got {tuple(y_target.shape)}")
    mask = _check_mask(who, "target_mask", target_mask, y_target)
    if not bool(mask.any(1).all()):
        raise ValueError(f"{who}: target_mask has a row without any target point")
    return _check_finite(who, "y_target", y_target, mask), mask


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of values (B, N, H) over the points where mask (B, N) is True -> (B, H); zero for a row
    with no point."""
    m = mask.to(values.dtype)[..., None]
    return (values * m).sum(1) / m.sum(1).clamp_min(1.0)


def packed_pointwise(fn, inputs: Tensor, mask: Tensor) -> Tensor:
    """``fn`` (pointwise: (P, D) -> (P, H)) on the real points of inputs (B, N, D) only -> (B, N, H),
    zero at the padded points."""
    rows, cols = mask.nonzero(as_tuple=True)
    h = fn(inputs[rows, cols])
    return torch.zeros(*mask.shape, h.shape[-1], dtype=h.dtype, device=h.device).index_put((rows, cols), h)


def packed_mean(fn, inputs: Tensor, mask: Tensor) -> Tensor:
    """``masked_mean(fn(inputs), mask)`` with ``fn`` (pointwise: (P, D) -> (P, H)) applied to the
    real points only: inputs (B, N, D), mask (B, N) -> (B, H); zero for a row with no point."""
    rows, cols = mask.nonzero(as_tuple=True)
    h = fn(inputs[rows, cols])
    sums = torch.zeros(mask.shape[0], h.shape[-1], dtype=h.dtype, device=h.device).index_add(0, rows, h)
    return sums / mask.sum(1, keepdim=True).to(h.dtype).clamp_min(1.0)


class MaskedMultiheadAttention(nn.Module):
    """Multi-head scaled dot-product attention over a padded key set.

    queries (B, Nq, d_q), keys (B, Nk, d_k), values (B, Nk, d_v), key_mask (B, Nk) -> (B, Nq, dim).
    Masked keys get zero weight; a query whose row has no real key returns zero. Heads of size
    dim / heads, then an output projection (Vaswani et al.), as in the ANP (Kim et al. 2019).
    """

    def __init__(self, d_q: int, d_k: int, d_v: int, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"MaskedMultiheadAttention: dim ({dim}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(d_q, dim, bias=False), nn.Linear(d_k, dim, bias=False), \
            nn.Linear(d_v, dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, key_mask: Tensor) -> Tensor:
        b, nq, _ = queries.shape
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, N, dim / heads)
        # an additive bias rather than -inf: a row with no real key stays finite (then zeroed below)
        bias = torch.zeros(key_mask.shape, dtype=queries.dtype, device=queries.device)
        bias = bias.masked_fill(~key_mask, torch.finfo(queries.dtype).min)[:, None, None, :]
        att = F.scaled_dot_product_attention(split(self.q(queries)), split(self.k(keys)), split(self.v(values)),
                                             attn_mask=bias)
        out = self.out(att.transpose(1, 2).reshape(b, nq, -1))
        return out * key_mask.any(1).to(out.dtype)[:, None, None]


class _SetEncoder(nn.Module):
    """Per-point representations of [x_i ; y_i] by an MLP (ReLU, none after the last layer),
    optionally followed by masked multi-head self-attention over the set (ANP)."""

    def __init__(self, x_dim: int, y_dim: int, hidden: Sequence[int], self_attention: bool, heads: int) -> None:
        super().__init__()
        self.mlp = MLP([x_dim + y_dim, *hidden])
        self.self_attention = (MaskedMultiheadAttention(hidden[-1], hidden[-1], hidden[-1], hidden[-1], heads)
                               if self_attention else None)
        self.packed = True  # pool over the real points only (see the module docstring)

    def points(self, x: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        """x (B, N, d_x), y (B, N, d_y), mask (B, N) -> r_i (B, N, H) (zero at padded points if packed)."""
        xy = torch.cat([x, y], -1)
        r = packed_pointwise(self.mlp, xy, mask) if self.packed else self.mlp(xy)
        if self.self_attention is not None:
            r = self.self_attention(r, r, r, mask)
        return r

    def pooled(self, x: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        """The masked mean of :meth:`points` -> (B, H)."""
        if self.packed and self.self_attention is None:
            return packed_mean(self.mlp, torch.cat([x, y], -1), mask)
        return masked_mean(self.points(x, y, mask), mask)


class DeterministicEncoder(_SetEncoder):
    """r = masked mean_i MLP([x_i ; y_i]) (CNP, NP), or per-target r*(x_t) by cross-attention from
    the targets to the context (ANP: keys and queries are a shared MLP embedding of x)."""

    def __init__(self, x_dim: int, y_dim: int, hidden: Sequence[int], *, cross_attention: bool = False,
                 self_attention: bool = False, heads: int = 8) -> None:
        super().__init__(x_dim, y_dim, hidden, self_attention, heads)
        h = hidden[-1]
        self.embed_x = MLP([x_dim, h, h]) if cross_attention else None
        self.cross = MaskedMultiheadAttention(h, h, h, h, heads) if cross_attention else None
        self.dim = h

    def forward(self, x_context: Tensor, y_context: Tensor, x_target: Tensor, mask: Tensor,
                target_mask: Tensor | None = None) -> Tensor:
        """-> (B, Nt, H): the same r for every target (mean), or r*(x_t) (attention); rows of
        ``target_mask`` (B, Nt) False may come out as anything (they are padding)."""
        if self.cross is None:
            return self.pooled(x_context, y_context, mask)[:, None, :].expand(-1, x_target.shape[1], -1)
        r = self.points(x_context, y_context, mask)
        if self.packed:
            tm = target_mask if target_mask is not None else torch.ones(x_target.shape[:2], dtype=torch.bool,
                                                                        device=x_target.device)
            queries, keys = packed_pointwise(self.embed_x, x_target, tm), packed_pointwise(self.embed_x, x_context, mask)
        else:
            queries, keys = self.embed_x(x_target), self.embed_x(x_context)
        return self.cross(queries, keys, r, mask)


class LatentEncoder(_SetEncoder):
    """q(z | set) = N(μ, σ²) with [μ ; s] = MLP(masked mean_i MLP([x_i ; y_i])), σ = 0.1 + 0.9 ·
    sigmoid(s) (Garnelo et al. 2018b; Kim et al. 2019)."""

    def __init__(self, x_dim: int, y_dim: int, hidden: Sequence[int], z_dim: int, *, self_attention: bool = False,
                 heads: int = 8) -> None:
        super().__init__(x_dim, y_dim, hidden, self_attention, heads)
        h = hidden[-1]
        self.head = MLP([h, h, 2 * z_dim])
        self.dim = z_dim

    def forward(self, x: Tensor, y: Tensor, mask: Tensor) -> torch.distributions.Normal:
        """x (B, N, d_x), y (B, N, d_y), mask (B, N) -> Normal over z of shape (B, z_dim)."""
        s = self.pooled(x, y, mask)
        mu, raw = self.head(F.relu(s)).chunk(2, -1)
        return torch.distributions.Normal(mu, SIGMA_FLOOR + (1 - SIGMA_FLOOR) * torch.sigmoid(raw))


class GaussianDecoder(nn.Module):
    """[μ ; s] = MLP([rep ; x_t]), σ = 0.1 + 0.9 · softplus(s) (Garnelo et al. 2018a)."""

    def __init__(self, rep_dim: int, x_dim: int, y_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.mlp = MLP([rep_dim + x_dim, *hidden, 2 * y_dim])

    def forward(self, rep: Tensor, x_target: Tensor) -> torch.distributions.Normal:
        """rep (..., Nt, rep_dim), x_target (..., Nt, d_x) -> Normal of shape (..., Nt, d_y)."""
        mu, raw = self.mlp(torch.cat([rep, x_target], -1)).chunk(2, -1)
        return torch.distributions.Normal(mu, SIGMA_FLOOR + (1 - SIGMA_FLOOR) * F.softplus(raw))
