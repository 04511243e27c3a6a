"""Random mann_memory_step inputs for tests and benchmarks."""
from __future__ import annotations

import torch
from torch import Tensor


def make_inputs(B: int, H: int, S: int, W: int, dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu", seed: int = 0, usage_ties: bool = False) -> list[Tensor]:
    """[memory (B, S, W), usage (B, S), read_weights (B, H, S), keys (B, H, W), add (B, H, W), alpha (B, H)]
    as a MANN step sees them: read weights a softmax, keys and add vectors from a tanh, alpha a sigmoid.
    usage_ties: usage takes only three distinct values, so the least-used slots are decided by the tie rule."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    if usage_ties:
        usage = torch.randint(0, 3, (B, S), generator=g).to(torch.float64) * 0.5
    else:
        usage = torch.rand(B, S, generator=g, dtype=torch.float64) * 2
    inputs = [r(B, S, W) * 0.5, usage, torch.softmax(2 * r(B, H, S), -1), torch.tanh(r(B, H, W)),
              torch.tanh(r(B, H, W)), torch.sigmoid(r(B, H))]
    return [x.to(dtype=dtype, device=device) for x in inputs]


def make_upstream(B: int, H: int, S: int, W: int, dtype: torch.dtype = torch.float32,
                  device: str | torch.device = "cpu", seed: int = 1) -> list[Tensor]:
    """Gradients arriving on (memory' (B, S, W), read_weights' (B, H, S), reads (B, H, W), usage' (B, S),
    write_weights (B, H, S))."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
            for s in [(B, S, W), (B, H, S), (B, H, W), (B, S), (B, H, S)]]
