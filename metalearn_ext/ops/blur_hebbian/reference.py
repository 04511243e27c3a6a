"""BLUR's Hebbian synapse update in plain PyTorch (specs/blur.md §2–3): the truth every kernel is tested against."""
from __future__ import annotations

import torch
from torch import Tensor

from metalearn_ext.ops.blur_propagate.reference import mix_states

NORM_EPS = 1e-12  # inside the square root, so an all-zero synapse column stays finite (and its gradient too)


def blur_hebbian_reference(weight: Tensor, pre: Tensor, post: Tensor, pre_mix: Tensor, post_mix: Tensor,
                           decay: Tensor, lr: Tensor, normalize: bool = True, oja: bool = False) -> Tensor:
    """w'[t,i,j,c] = decay[t]·w[t,i,j,c] + lr[t]·Σ_b p[t,b,i,c]·q[t,b,j,c], with
    p[t,b,i,c] = Σ_e pre[t,b,i,e]·pre_mix[e,c] and q[t,b,j,c] = Σ_d post_mix[c,d]·post[t,b,j,d].

    oja: also − lr[t]·Σ_b q[t,b,j,c]²·w[t,i,j,c]. normalize: then w' / sqrt(Σ_i w'² + eps) per (t, j, c).
    Shapes: weight (T, I, J, k); pre (T, batch, I, k); post (T, batch, J, k); mixes (k, k) or (T, k, k);
    decay, lr (T,).
    """
    p = mix_states(pre, pre_mix.transpose(-1, -2))  # Σ_e pre[..., e] pre_mix[e, c]
    q = mix_states(post, post_mix)
    hebb = torch.einsum("tbic,tbjc->tijc", p, q)
    out = decay[:, None, None, None] * weight + lr[:, None, None, None] * hebb
    if oja:
        out = out - lr[:, None, None, None] * (q * q).sum(1)[:, None] * weight
    if normalize:
        out = out * torch.rsqrt((out * out).sum(1, keepdim=True) + NORM_EPS)
    return out
