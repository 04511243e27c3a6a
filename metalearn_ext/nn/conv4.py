"""The conv-4 image encoder of MAML and Prototypical Networks (Vinyals et al. 2016)."""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["Conv4"]


class Conv4(nn.Module):
    """``depth`` × [conv 3×3 (padding 1), ``hidden`` channels, BatchNorm2d, ReLU, 2×2 max-pool] → flatten.

    (B, C, H, W) -> (B, D) with D = hidden · H' · W', where each block maps a side s to s // 2
    (max-pool) or to (s + 1) // 2 (``pool=False``: a stride-2 conv instead, as in MAML's
    Omniglot network). 28×28 → 1×1 after four blocks, so D = ``hidden``; use ``depth=3`` for
    8×8 inputs. :meth:`output_dim` gives D for an input size.

    Args:
        in_channels: C.
        hidden: channels of every block (64 in both papers).
        depth: number of blocks (4).
        batch_norm: insert BatchNorm2d after each conv (the convs then have no bias: BN shifts).
        pool: 2×2 max-pool after each block (True) or stride-2 convolutions (False).
        track_running_stats: BatchNorm keeps running statistics (ordinary BN, what ProtoNet
            uses). False: batch statistics in training and evaluation alike and no buffers —
            what MAML does, and what lets ``torch.func.vmap`` run over tasks.
        average: the output is the mean over the last block's H' × W' positions, D = ``hidden``
            (MAML's Omniglot network: 28×28 with stride-2 blocks ends at 2×2), instead of the
            flattened map.
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden: int = 64,
        depth: int = 4,
        batch_norm: bool = True,
        pool: bool = True,
        track_running_stats: bool = True,
        average: bool = False,
    ) -> None:
        super().__init__()
        for arg, value in (("in_channels", in_channels), ("hidden", hidden), ("depth", depth)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Conv4: {arg} must be a positive int, got {value!r}")
        self.in_channels, self.hidden, self.depth, self.pool = in_channels, hidden, depth, pool
        self.average = bool(average)
        layers: list[nn.Module] = []
        for i in range(depth):
            stride = 1 if pool else 2
            # A conv followed by BN needs no bias: BN's shift replaces it.
            layers.append(nn.Conv2d(in_channels if i == 0 else hidden, hidden, 3, stride=stride,
                                    padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(hidden, track_running_stats=track_running_stats))
            layers.append(nn.ReLU())
            if pool:
                layers.append(nn.MaxPool2d(2))
        if self.average:
            layers.append(nn.AdaptiveAvgPool2d(1))
        layers.append(nn.Flatten())
        self.layers = nn.Sequential(*layers)

    def output_side(self, side: int) -> int:
        """The spatial side after all blocks for an input side ``side`` (0: too small)."""
        for _ in range(self.depth):
            side = side // 2 if self.pool else (side + 1) // 2
        return side

    def output_dim(self, height: int, width: int | None = None) -> int:
        """D, the output size for (height, width) inputs (width defaults to height): the flattened
        map's, or ``hidden`` with ``average``."""
        h, w = self.output_side(height), self.output_side(height if width is None else width)
        if h < 1 or w < 1:
            raise ValueError(
                f"Conv4: a {height}×{width or height} input is too small for {self.depth} pooling "
                f"blocks (needs a side ≥ {2 ** self.depth}); use fewer blocks (depth) or larger images")
        return self.hidden if self.average else self.hidden * h * w

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) -> (B, D)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv4: x must be of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if self.pool and min(x.shape[2], x.shape[3]) < 2 ** self.depth:
            self.output_dim(x.shape[2], x.shape[3])  # raises the readable error
        return self.layers(x)

