"""A plain multi-layer perceptron (MAML's sinusoid regressor: 1 → 40 → 40 → 1, ReLU)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

__all__ = ["MLP"]


class MLP(nn.Module):
    """Linear layers of the given ``sizes`` with ``activation`` between them (none after the last).

    (..., sizes[0]) -> (..., sizes[-1]).

    Args:
        sizes: layer widths, input first; at least two.
        activation: a callable returning a fresh activation module (a class such as ``nn.ReLU``).
    """

    def __init__(self, sizes: Sequence[int] = (1, 40, 40, 1),
                 activation: Callable[[], nn.Module] = nn.ReLU) -> None:
        super().__init__()
        sizes = tuple(sizes)
        if len(sizes) < 2 or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes):
            raise ValueError(f"MLP: sizes must be at least two positive ints, got {sizes!r}")
        if not callable(activation):
            raise ValueError(f"MLP: activation must be a callable returning an nn.Module, got {activation!r}")
        self.sizes = sizes
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(activation())
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., sizes[0]) -> (..., sizes[-1])."""
        if x.dim() < 1 or x.shape[-1] != self.sizes[0]:
            raise ValueError(f"MLP: x must be of shape (..., {self.sizes[0]}), got {tuple(x.shape)}")
        return self.layers(x)
