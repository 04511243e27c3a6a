"""Random content_read inputs for tests and benchmarks."""
from __future__ import annotations

import torch
from torch import Tensor


def make_inputs(B: int, H: int, S: int, W: int, with_beta: bool = True, dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu", seed: int = 0) -> list[Tensor]:
    """[memory (B, S, W), keys (B, H, W)] and, with_beta, beta (B, H) in [0.5, 10): MANN-like magnitudes
    (keys from a tanh, memory a sum of written add vectors)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    inputs = [r(B, S, W) * 0.5, torch.tanh(r(B, H, W))]
    if with_beta:
        inputs.append(0.5 + 9.5 * torch.rand(B, H, generator=g, dtype=torch.float64))
    return [x.to(dtype=dtype, device=device) for x in inputs]


def make_upstream(B: int, H: int, S: int, W: int, dtype: torch.dtype = torch.float32,
                  device: str | torch.device = "cpu", seed: int = 1) -> list[Tensor]:
    """Gradients arriving on (weights (B, H, S), reads (B, H, W))."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
            for s in [(B, H, S), (B, H, W)]]
