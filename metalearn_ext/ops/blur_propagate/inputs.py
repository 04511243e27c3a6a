"""Random inputs of blur_propagate and blur_hebbian for tests and benchmarks (reproducible from a seed)."""
from __future__ import annotations

import torch
from torch import Tensor


def propagate_inputs(T: int, B: int, I: int, J: int, k: int, transpose: bool = False, per_copy: bool = False,
                     dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0) -> list[Tensor]:
    """[a, weight, mix]: a (T, B, I, k) (transpose: (T, B, J, k)), weight (T, I, J, k), mix (k, k) or (T, k, k)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(T, B, J if transpose else I, k, generator=g, dtype=dtype)
    weight = torch.randn(T, I, J, k, generator=g, dtype=dtype) / (J if transpose else I) ** 0.5
    mix = torch.randn(*((T, k, k) if per_copy else (k, k)), generator=g, dtype=dtype) / k ** 0.5
    return [x.to(device) for x in (a, weight, mix)]


def hebbian_inputs(T: int, B: int, I: int, J: int, k: int, per_copy: bool = False, dtype: torch.dtype = torch.float32,
                   device: str = "cpu", seed: int = 0) -> list[Tensor]:
    """[weight, pre, post, pre_mix, post_mix, decay, lr]: weight (T, I, J, k), pre (T, B, I, k), post (T, B, J, k),
    mixes (k, k) or (T, k, k), decay and lr (T,)."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(T, I, J, k, generator=g, dtype=dtype) / I ** 0.5
    pre = torch.randn(T, B, I, k, generator=g, dtype=dtype)
    post = torch.randn(T, B, J, k, generator=g, dtype=dtype)
    shape = (T, k, k) if per_copy else (k, k)
    pre_mix = torch.randn(*shape, generator=g, dtype=dtype) / k ** 0.5
    post_mix = torch.randn(*shape, generator=g, dtype=dtype) / k ** 0.5
    decay = 0.5 + 0.5 * torch.rand(T, generator=g, dtype=dtype)
    lr = 0.1 * torch.rand(T, generator=g, dtype=dtype) / B
    return [x.to(device) for x in (weight, pre, post, pre_mix, post_mix, decay, lr)]
