"""Neural processes: the conditional NP (Garnelo et al., ICML 2018), the latent-variable NP
(Garnelo et al. 2018b) and the attentive NP (Kim et al., ICLR 2019), on the pieces of
:mod:`metalearn_ext.nn.np_parts`.

Every model answers ``model(x_context, y_context, x_target, context_mask=None)`` with a
``torch.distributions.Normal`` over y at the targets, and ``model.loss(...)`` with its training
objective. Shapes: x (B, N, d_x), y (B, N, d_y), context_mask (B, N_c) bool (True for real
points; None: all real); d_x, d_y ≥ 1.

* CNP: Normal (B, Nt, d_y), deterministic.
* LatentNP / ANP: one draw z ~ q(z | C) per row, Normal (B, Nt, d_y) given it; with
  ``num_z=S``, Normal (S, B, Nt, d_y): the S components of the equal-weight mixture
  (1/S) Σ_s N(μ_s, σ_s²) that estimates the predictive p(y | x, C) = E_{q(z|C)} p(y | x, z, C);
  :meth:`NeuralProcess.log_likelihood` scores it by log-mean-exp over s.

An empty context (a row of context_mask all False) is allowed: the deterministic path then
aggregates to the zero vector (mean and attention alike) and the latent prior q(z | ∅) is the
latent encoder's output for it, so the models predict a fixed, context-free distribution;
nothing is trained on that case unless the task draws empty contexts.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Normal, kl_divergence

from metalearn_ext.nn.np_parts import DeterministicEncoder, GaussianDecoder, LatentEncoder, check_context, check_targets

__all__ = ["ANP", "CNP", "LatentNP", "NeuralProcess", "mixture_moments"]


def mixture_moments(dist: Normal) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of a predictive: the Normal itself (B, Nt, d_y), or the
    equal-weight mixture over the leading dim of a Normal (S, B, Nt, d_y)."""
    if dist.mean.dim() == 3:
        return dist.mean, dist.stddev
    mean = dist.mean.mean(0)
    var = (dist.variance + dist.mean.pow(2)).mean(0) - mean.pow(2)
    return mean, var.clamp_min(0).sqrt()


class NeuralProcess(nn.Module):
    """The family in one module: a deterministic path (mean or cross-attention) and/or a global
    latent path, and a Gaussian decoder. Use :class:`CNP`, :class:`LatentNP` or :class:`ANP`.

    Args:
        x_dim, y_dim: d_x and d_y.
        hidden: encoder MLP widths (the last is the representation size H).
        decoder_hidden: decoder hidden widths (its output is 2 · d_y).
        deterministic: keep the deterministic path r.
        z_dim: size of the global latent z (None: no latent, a CNP).
        cross_attention: r*(x_t) by multi-head cross-attention from targets to context (ANP).
        self_attention: multi-head self-attention over the context in both encoders.
        heads: attention heads (H must be a multiple).
    """

    def __init__(self, x_dim: int, y_dim: int, *, hidden: Sequence[int] = (128, 128, 128, 128),
                 decoder_hidden: Sequence[int] = (128, 128), deterministic: bool = True, z_dim: int | None = None,
                 cross_attention: bool = False, self_attention: bool = False, heads: int = 8) -> None:
        super().__init__()
        for name, v in (("x_dim", x_dim), ("y_dim", y_dim), ("heads", heads)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive int, got {v!r}")
        hidden, decoder_hidden = tuple(hidden), tuple(decoder_hidden)
        if not hidden or not decoder_hidden:
            raise ValueError(f"{type(self).__name__}: hidden and decoder_hidden need at least one width, got "
                             f"{hidden} and {decoder_hidden}")
        if z_dim is not None and (not isinstance(z_dim, int) or z_dim < 1):
            raise ValueError(f"{type(self).__name__}: z_dim must be a positive int or None, got {z_dim!r}")
        if not deterministic and z_dim is None:
            raise ValueError(f"{type(self).__name__}: needs a deterministic path or a latent (z_dim)")
        self.x_dim, self.y_dim = x_dim, y_dim
        self.deterministic = (DeterministicEncoder(x_dim, y_dim, hidden, cross_attention=cross_attention,
                                                   self_attention=self_attention, heads=heads)
                              if deterministic else None)
        self.latent = (LatentEncoder(x_dim, y_dim, hidden, z_dim, self_attention=self_attention, heads=heads)
                       if z_dim is not None else None)
        rep = (hidden[-1] if deterministic else 0) + (z_dim or 0)
        self.decoder = GaussianDecoder(rep, x_dim, y_dim, decoder_hidden)
        self.decoder_packed = True

    @property
    def is_latent(self) -> bool:
        return self.latent is not None

    def _decode(self, r: Tensor | None, z: Tensor | None, x_target: Tensor) -> Normal:
        """r (B, Nt, H) or None, z (..., B, z_dim) or None, x_target (B, Nt, d_x) -> Normal (..., B, Nt, d_y)."""
        lead = z.shape[:-2] if z is not None else ()
        parts = []
        if r is not None:
            parts.append(r.expand(*lead, *r.shape))
        if z is not None:
            parts.append(z[..., None, :].expand(*z.shape[:-1], x_target.shape[1], z.shape[-1]))
        return self.decoder(torch.cat(parts, -1), x_target.expand(*lead, *x_target.shape))

    def _target_log_prob(self, r: Tensor | None, z: Tensor | None, xt: Tensor, yt: Tensor, tmask: Tensor) -> Tensor:
        """Σ over the real targets of log p(y_t | r_t, z, x_t) per row (B,): the decoder runs on the
        real targets only (packed), or on every slot with the padded ones then dropped."""
        if not self.decoder_packed:
            lp = self._decode(r, z, xt).log_prob(yt).sum(-1)
            return torch.where(tmask, lp, 0.0).sum(1)
        rows, cols = tmask.nonzero(as_tuple=True)
        parts = ([r[rows, cols]] if r is not None else []) + ([z[rows]] if z is not None else [])
        lp = self.decoder(torch.cat(parts, -1), xt[rows, cols]).log_prob(yt[rows, cols]).sum(-1)
        return torch.zeros(tmask.shape[0], dtype=lp.dtype, device=lp.device).index_add(0, rows, lp)

    def set_packed(self, packed: bool) -> NeuralProcess:
        """Run the set encoders and the training decoder on the real points only (True, the
        default) or on every padded slot (False): the same values up to rounding, half the work
        on typical padded batches."""
        self.decoder_packed = packed
        for enc in (self.deterministic, self.latent):
            if enc is not None:
                enc.packed = packed
        return self

    def forward(self, x_context: Tensor, y_context: Tensor, x_target: Tensor, context_mask: Tensor | None = None,
                *, num_z: int | None = None) -> Normal:
        """The predictive at x_target (B, Nt, d_x) given the context: Normal (B, Nt, d_y), or for a
        latent model with ``num_z=S`` the mixture's components, Normal (S, B, Nt, d_y)."""
        xc, yc, xt, mask = check_context(type(self).__name__, x_context, y_context, x_target, context_mask,
                                         self.x_dim, self.y_dim)
        r = self.deterministic(xc, yc, xt, mask) if self.deterministic is not None else None
        if self.latent is None:
            if num_z is not None:
                raise ValueError(f"{type(self).__name__}: num_z applies to latent models only")
            return self._decode(r, None, xt)
        if num_z is not None and (not isinstance(num_z, int) or num_z < 1):
            raise ValueError(f"{type(self).__name__}: num_z must be a positive int, got {num_z!r}")
        prior = self.latent(xc, yc, mask)
        z = prior.rsample(() if num_z is None else (num_z,))
        return self._decode(r, z, xt)

    def log_likelihood(self, x_context: Tensor, y_context: Tensor, x_target: Tensor, y_target: Tensor,
                       context_mask: Tensor | None = None, *, num_z: int = 32) -> Tensor:
        """log p(y_t | x_t, C) per target point (B, Nt), joint over y's d_y dimensions; for a latent
        model the log-mean-exp over ``num_z`` draws z ~ q(z | C) (a lower bound in expectation)."""
        if self.latent is None:
            return self(x_context, y_context, x_target, context_mask).log_prob(y_target).sum(-1)
        lp = self(x_context, y_context, x_target, context_mask, num_z=num_z).log_prob(y_target).sum(-1)
        return torch.logsumexp(lp, 0) - math.log(num_z)

    def loss(self, x_context: Tensor, y_context: Tensor, x_target: Tensor, y_target: Tensor,
             context_mask: Tensor | None = None, target_mask: Tensor | None = None) -> tuple[Tensor, dict]:
        """The training objective, per target point, averaged over rows.

        CNP: −mean_t log N(y_t; μ_t, σ_t²). Latent models: the negative ELBO
        (−Σ_t E_{q(z|T)} log p(y_t | z, x_t, C) + KL(q(z|T) ‖ q(z|C))) / N_t, one draw of z from
        q(z | T), T = the targets (which include the context). y_target (B, Nt, d_y),
        target_mask (B, Nt) bool (at least one target per row).

        Returns:
            (loss (), {"nll": mean −log p per point, "kl": mean KL per point (0 for CNP)}).
        """
        who = type(self).__name__
        xc, yc, xt, cmask = check_context(who, x_context, y_context, x_target, context_mask, self.x_dim, self.y_dim)
        yt, tmask = check_targets(who, xt, y_target, target_mask, self.y_dim)
        n_t = tmask.sum(1).to(yt.dtype)
        r = self.deterministic(xc, yc, xt, cmask, tmask) if self.deterministic is not None else None
        kl, z = torch.zeros_like(n_t), None
        if self.latent is not None:
            posterior, prior = self.latent(xt, yt, tmask), self.latent(xc, yc, cmask)
            z = posterior.rsample()
            kl = kl_divergence(posterior, prior).sum(-1)
        nll = -self._target_log_prob(r, z, xt, yt, tmask) / n_t
        return (nll + kl / n_t).mean(), {"nll": float(nll.detach().mean()), "kl": float((kl.detach() / n_t).mean())}


class CNP(NeuralProcess):
    """Conditional neural process: r = masked mean of MLP([x_i ; y_i]), decoder MLP([r ; x_t]).
    Defaults are the paper's: encoder [128]·4, decoder [128, 128, 2·d_y]."""

    def __init__(self, x_dim: int = 1, y_dim: int = 1, *, hidden: Sequence[int] = (128, 128, 128, 128),
                 decoder_hidden: Sequence[int] = (128, 128)) -> None:
        super().__init__(x_dim, y_dim, hidden=hidden, decoder_hidden=decoder_hidden)


class LatentNP(NeuralProcess):
    """Neural process with a global latent z ~ N(μ, (0.1 + 0.9 sigmoid(s))²) beside the
    deterministic mean path (``deterministic=False``: the latent path alone, Garnelo 2018b)."""

    def __init__(self, x_dim: int = 1, y_dim: int = 1, *, hidden: Sequence[int] = (128, 128, 128, 128),
                 decoder_hidden: Sequence[int] = (128, 128), z_dim: int = 128, deterministic: bool = True) -> None:
        super().__init__(x_dim, y_dim, hidden=hidden, decoder_hidden=decoder_hidden, z_dim=z_dim,
                         deterministic=deterministic)


class ANP(NeuralProcess):
    """Attentive neural process: multi-head cross-attention from the targets to the context on the
    deterministic path, a global latent (``z_dim=None``: none, the attentive CNP), and optionally
    self-attention over the context in both encoders (Kim et al. 2019)."""

    def __init__(self, x_dim: int = 1, y_dim: int = 1, *, hidden: Sequence[int] = (128, 128, 128, 128),
                 decoder_hidden: Sequence[int] = (128, 128), z_dim: int | None = 128, self_attention: bool = False,
                 heads: int = 8) -> None:
        super().__init__(x_dim, y_dim, hidden=hidden, decoder_hidden=decoder_hidden, z_dim=z_dim,
                         cross_attention=True, self_attention=self_attention, heads=heads)
