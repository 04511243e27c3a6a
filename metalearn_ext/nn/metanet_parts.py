"""The pieces MetaNet (Munkhdalai & Yu 2017) is built from: the loss-gradient preprocessing, the
coordinate-wise meta learners that turn gradients into fast weights, and the conv net whose every
layer is augmented with fast weights (``ReLU(conv(x; W)) + ReLU(conv(x; W*))``)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AugmentedConvNet", "BaseMetaLearner", "KeyMetaLearner", "preprocess_gradients"]


def preprocess_gradients(g: Tensor, p: float = 7.0, eps: float = 1e-10) -> Tensor:
    """Per coordinate g: [max(log(|g| + ε) / p, −1), clip(g · e^p, −1, 1)] (MetaNet's, after
    Andrychowicz et al. 2016): magnitude on a log scale and sign, both in [−1, 1], so coordinates
    whose gradients differ by orders of magnitude share one meta learner.

    g (...) -> (..., 2).
    """
    magnitude = (torch.log(g.abs() + eps) / p).clamp_min(-1.0)
    sign = (g * math.exp(p)).clamp(-1.0, 1.0)
    return torch.stack([magnitude, sign], dim=-1)


def _spread_out(layer: nn.Linear) -> None:
    """Unit-variance weights and no bias for a meta learner's output layer. With PyTorch's default
    init the fast weights of a fresh model are a near constant (std 0.017 across coordinates) that
    carries no label, and meta-training sits at chance for hundreds of steps (Omniglot: 380 and
    counting); spread out, they differ by example from the first step."""
    nn.init.normal_(layer.weight, std=1.0)
    nn.init.zeros_(layer.bias)


class BaseMetaLearner(nn.Module):
    """m(Z, ∇): the base learner's fast weights, one coordinate at a time, MLP 2 → 20 → 20 → 1 (ReLU).

    (..., 2) preprocessed gradients -> (...,) fast-weight coordinates.
    """

    def __init__(self, hidden: int = 20) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))
        _spread_out(self.net[-1])

    def forward(self, g: Tensor) -> Tensor:
        return self.net(g).squeeze(-1)

    @torch.no_grad()
    def anchor(self, g0: Tensor, value: float = 0.0) -> None:
        """Shift the output layer's bias so that the preprocessed gradient ``g0`` (2,) (that of a zero
        gradient) maps to a fast weight of exactly ``value``."""
        self.net[-1].bias -= self(g0.reshape(1, 2))[0] - value


class KeyMetaLearner(nn.Module):
    """d(G, {∇_i}): the key net's task-level fast weights, one coordinate at a time: an LSTM 2 → 20
    reads the S support examples' preprocessed gradients of that coordinate in order, a Linear
    20 → 1 maps its last hidden state to the fast weight.

    (S, P, 2) -> (P,).
    """

    def __init__(self, hidden: int = 20) -> None:
        super().__init__()
        # A cell stepped in Python, not nn.LSTM: oneDNN's LSTM costs ~0.3 s forward and ~0.5 s
        # backward on 4k coordinates (5 steps, one thread), the cell ~40 ms for both.
        self.cell = nn.LSTMCell(2, hidden)
        self.out = nn.Linear(hidden, 1)
        _spread_out(self.out)

    def forward(self, g: Tensor) -> Tensor:
        if g.dim() != 3 or g.shape[-1] != 2:
            raise ValueError(f"KeyMetaLearner: g must be of shape (S, P, 2), got {tuple(g.shape)}")
        state = None
        for g_t in g:
            state = self.cell(g_t, state)
        return self.out(state[0]).squeeze(-1)

    @torch.no_grad()
    def anchor(self, g0: Tensor, value: float = 0.0, steps: int = 20) -> None:
        """Shift the output layer's bias so that ``steps`` support examples, each with the preprocessed
        gradient ``g0`` (2,) (that of a zero gradient), map to a fast weight of exactly ``value`` (the
        LSTM's state for a constant input settles within a few steps, so other support sizes land near it)."""
        self.out.bias -= self(g0.reshape(1, 1, 2).expand(steps, 1, 2).contiguous())[0] - value


def _conv(x: Tensor, w: Tensor, b: Tensor, per_example: bool) -> Tensor:
    if not per_example:
        return F.conv2d(x, w, b, padding=1)
    # One weight set per example: a grouped convolution with the batch as the groups.
    n, c, h, wd = x.shape
    y = F.conv2d(x.reshape(1, n * c, h, wd), w.reshape(-1, *w.shape[2:]), b.reshape(-1), padding=1, groups=n)
    return y.reshape(n, -1, h, wd)


def _linear(x: Tensor, w: Tensor, b: Tensor, per_example: bool) -> Tensor:
    if not per_example:
        return F.linear(x, w, b)
    return torch.baddbmm(b.unsqueeze(-1), w, x.unsqueeze(-1)).squeeze(-1)


class AugmentedConvNet(nn.Module):
    """``depth`` × [conv 3×3 (padding 1), ``hidden`` ch, ReLU, 2×2 max-pool] → fc ``embed`` (ReLU)
    → fc ``out``, each layer optionally augmented with fast weights.

    The pools round up (``ceil_mode``), so five of them take 28×28 to 1×1 (28, 14, 7, 4, 2, 1);
    floor pooling would reach 0 at the fifth. With fast weights ``fast`` (a dict keyed like
    :meth:`named_parameters`), a hidden layer computes ReLU(f(x; W)) + ReLU(f(x; W*)) and the
    output layer f(x; W) + f(x; W*) (no ReLU: logits must be able to go negative). A layer whose
    name is absent from ``fast`` runs on its slow weights alone.

    Args:
        in_channels, image_size: C and S of (B, C, S, S) inputs.
        hidden: conv channels (64); depth: conv blocks (5); embed: fc width (64); out: outputs.
        channels_last: run the convolutions in NHWC (weights and inputs): 1.9x faster forward on
            a CPU (80 images, one thread), the same speed forward + backward.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, hidden: int = 64, depth: int = 5,
                 embed: int = 64, out: int = 5, channels_last: bool = False) -> None:
        super().__init__()
        for arg, value in (("in_channels", in_channels), ("image_size", image_size), ("hidden", hidden),
                           ("depth", depth), ("embed", embed), ("out", out)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"AugmentedConvNet: {arg} must be a positive int, got {value!r}")
        self.in_channels, self.image_size, self.channels_last = in_channels, image_size, bool(channels_last)
        self.convs = nn.ModuleList(nn.Conv2d(in_channels if i == 0 else hidden, hidden, 3, padding=1)
                                   for i in range(depth))
        side = image_size
        for _ in range(depth):
            side = (side + 1) // 2
        self.fc = nn.Linear(hidden * side * side, embed)
        self.head = nn.Linear(embed, out)
        for name in self.layer_names()[:-1]:
            # He init: PyTorch's default shrinks activations layer by layer (fc features ~0.03 after
            # five convs), and the fast paths, products with those features, start near zero.
            layer = self.get_submodule(name)
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def layer_names(self) -> list[str]:
        """The layers, input first: ``convs.0`` … ``convs.{depth-1}``, ``fc``, ``head``."""
        return [f"convs.{i}" for i in range(len(self.convs))] + ["fc", "head"]

    def fan_in_scales(self) -> dict[str, float]:
        """Parameter name -> 1/√fan_in, the bound of PyTorch's default init of that layer."""
        scales = {}
        for name in self.layer_names():
            s = 1.0 / math.sqrt(self.get_submodule(name).weight[0].numel())
            scales.update({f"{name}.weight": s, f"{name}.bias": s})
        return scales

    def _layer(self, f, name: str, x: Tensor, fast: dict[str, Tensor] | None, per_example: bool, relu: bool,
               rows: int | None = None) -> Tensor:
        layer = self.get_submodule(name)
        w, b = layer.weight[:rows], layer.bias[:rows]
        y = f(x, w, b, False)
        y = F.relu(y) if relu else y
        if fast is None or f"{name}.weight" not in fast:
            return y
        fw, fb = fast[f"{name}.weight"], fast[f"{name}.bias"]
        if rows is not None:
            fw, fb = (fw[:, :rows], fb[:, :rows]) if per_example else (fw[:rows], fb[:rows])
        z = f(x, fw, fb, per_example)
        return y + (F.relu(z) if relu else z)

    def features(self, x: Tensor, fast: dict[str, Tensor] | None = None, per_example: bool = False) -> Tensor:
        """x (B, C, S, S) -> the fc layer's output (B, embed). ``fast``: one set of fast weights
        shaped like the parameters, or with ``per_example`` one set per example, (B, *shape) each."""
        if x.dim() != 4 or x.shape[1:] != (self.in_channels, self.image_size, self.image_size):
            raise ValueError(f"AugmentedConvNet: x must be of shape (B, {self.in_channels}, {self.image_size}, "
                             f"{self.image_size}), got {tuple(x.shape)}")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for i in range(len(self.convs)):
            x = F.max_pool2d(self._layer(_conv, f"convs.{i}", x, fast, per_example, True), 2, ceil_mode=True)
        return self._layer(_linear, "fc", x.flatten(1), fast, per_example, True)

    def forward(self, x: Tensor, fast: dict[str, Tensor] | None = None, per_example: bool = False,
                n_out: int | None = None) -> Tensor:
        """x (B, C, S, S) -> outputs (B, n_out): the first ``n_out`` (default all) output units."""
        h = self.features(x, fast, per_example)
        return self._layer(_linear, "head", h, fast, per_example, False, rows=n_out)
