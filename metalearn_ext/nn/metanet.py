"""Meta Networks (Munkhdalai & Yu, ICML 2017) for N-way K-shot classification, with the support
examples' loss gradients in one vectorized call (``torch.func.vmap(grad(...))``).

Per episode (Algorithm 1 of the paper, with T = S: every support example feeds the key net):

1. For every support example i: the loss gradients ∇_W L_i of the base learner b and ∇_Q ℓ_i of the
   key (representation) net u, both cross-entropy on the support label, at the slow weights W, Q.
2. Key fast weights Q* = d(G, {∇_Q ℓ_i}) (an LSTM over the S gradients, coordinate-wise);
   base fast weights W*_i = m(Z, ∇_W L_i) (an MLP, coordinate-wise), kept in a memory M (S, |W|).
3. Keys r'_i = u(Q, Q*, x'_i) of the support, r = u(Q, Q*, x) of each query; attention
   a = softmax(cos(r'_i, r)) over the support; the query's fast weights W* = Σ_i a_i W*_i.
4. Query logits b(W, W*, x), every layer with fast weights augmented: ReLU(f(x; W)) + ReLU(f(x; W*))
   (all layers in the paper; the top ``fast_layers`` here if set).

The meta-loss is the query cross-entropy; Adam trains W, Q, Z and G. The support gradients enter
the meta learners as data and are not differentiated through (no second-order terms; the original
code copied them to the host, which rules those out too).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from metalearn_ext.nn.metanet_parts import (
    AugmentedConvNet,
    BaseMetaLearner,
    KeyMetaLearner,
    preprocess_gradients,
)
from metalearn_ext.nn.protonet import check_episodes, infer_n_way

__all__ = ["MetaNet"]

GradientMode = Literal["vmap", "loop"]
GRADIENT_MODES = ("vmap", "loop")


class MetaNet(nn.Module):
    """MetaNet: a base learner and a key net, each with slow weights and fast weights made from the
    support set's loss gradients by coordinate-wise meta learners.

    The few-shot interface (one episode, or E episodes with a leading E):

    * support_x (S, C, H, W) / (E, S, C, H, W), support_y (S,) / (E, S) int64 in 0..N−1,
    * query_x (Q, C, H, W) / (E, Q, C, H, W) → logits (Q, N) / (E, Q, N).

    Both nets have ``max_way`` output units; an N-way episode uses the first N (N ≤ ``max_way``),
    so one model serves 5-way and 20-way episodes. Fast weights are scaled, layer by layer, by
    1/√fan_in (the bound of the slow weights' init), so the meta learners' outputs of order one
    give fast paths of the slow paths' size from the first step. The key net's output layer only
    gives the support gradients their labels; the keys are its fc features, so it gets no fast weights.

    Args:
        max_way: output units of the base learner and the key net (the largest N served).
        in_channels, image_size: C and H = W of the images (28×28 Omniglot).
        hidden, depth, embed: each net is ``depth`` × [conv 3×3 ``hidden``, ReLU, max-pool 2]
            → fc ``embed`` → fc ``max_way`` (5, 64, 64 in the paper).
        meta_hidden: width of the meta learners (MLP 2→20→20→1, LSTM 2→20 + Linear 20→1).
        p: the gradient preprocessing's p (7).
        fast_layers: how many top layers of each net get fast weights (output layer, fc, last
            conv, …; in the key net minus its output layer); None: every layer, as in the paper.
            At least 2. Fewer is much cheaper: the meta learners run once per coordinate, and the
            convolutions hold 96% of the ~154k coordinates of each net.
        gradients: ``"vmap"`` — the S per-example gradients in one ``vmap(grad(...))`` call — or
            ``"loop"`` — one backward pass per support example, the original code's way.
        channels_last: NHWC convolutions (see :class:`AugmentedConvNet`).
        attention_scale: the factor on the cosines before the attention's softmax (1: the
            paper's). The keys are ReLU features, so their cosines lie in [0, 1] and with a factor
            of 1 the attention over 20 support examples is nearly uniform: the query's fast weights
            become an average of every class's.
        learn_attention_scale: make that factor a parameter (stored as its log, starting at
            ``attention_scale``), trained with the rest.
        center_keys: subtract the mean of the episode's support keys from every key (support and
            query) before the cosines. The keys of a fresh model are nearly parallel, so the
            paper's attention starts close to uniform; centred, the cosines start spread over
            [−1, 1]. False: the paper's.
        anchor_fast_weights: None (the default), or a value v: shift both meta learners' output
            biases at init so that a zero gradient gives the fast weight v (in units of the layer's
            1/√fan_in; no other draw changes). Without it the fast weights of a fresh model share a
            common offset whose sign and size the seed sets (for some seeds several times their
            spread across coordinates). A positive offset opens every fast ReLU path at once, the
            first logits are large (a first meta-loss of 4.9 or 12.0 at 30-way instead of ln 30 =
            3.4, docs/RESULTS.md) and meta-training can collapse to the uniform prediction within ten
            steps and stay there; seeds with a negative one learn. v = −1 starts every fast path
            shut, as those seeds do; v = 0 removed the collapse but left another seed at the uniform
            prediction for hundreds of steps (docs/RESULTS.md).
    """

    def __init__(self, max_way: int = 20, in_channels: int = 1, image_size: int = 28, hidden: int = 64,
                 depth: int = 5, embed: int = 64, meta_hidden: int = 20, p: float = 7.0,
                 fast_layers: int | None = None, gradients: GradientMode = "vmap",
                 channels_last: bool = False, attention_scale: float = 1.0,
                 learn_attention_scale: bool = False, center_keys: bool = False,
                 anchor_fast_weights: float | None = None) -> None:
        super().__init__()
        if not isinstance(max_way, int) or isinstance(max_way, bool) or max_way < 2:
            raise ValueError(f"MetaNet: max_way must be an int >= 2, got {max_way!r}")
        if not isinstance(meta_hidden, int) or isinstance(meta_hidden, bool) or meta_hidden < 1:
            raise ValueError(f"MetaNet: meta_hidden must be a positive int, got {meta_hidden!r}")
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not p > 0:
            raise ValueError(f"MetaNet: p must be a positive number, got {p!r}")
        nets = dict(in_channels=in_channels, image_size=image_size, hidden=hidden, depth=depth, embed=embed,
                    out=max_way, channels_last=channels_last)
        self.base = AugmentedConvNet(**nets)  # checks the sizes
        self.key = AugmentedConvNet(**nets)
        if fast_layers is not None and (not isinstance(fast_layers, int) or isinstance(fast_layers, bool)
                                        or not 2 <= fast_layers <= depth + 2):
            # at least 2: the output layer and fc, so that the key net has fast weights too
            raise ValueError(f"MetaNet: fast_layers must be None or an int in 2..{depth + 2} (depth + 2 layers), "
                             f"got {fast_layers!r}")
        if (not isinstance(attention_scale, (int, float)) or isinstance(attention_scale, bool)
                or not 0 < attention_scale < float("inf")):
            raise ValueError(f"MetaNet: attention_scale must be a positive finite number, got {attention_scale!r}")
        if not isinstance(learn_attention_scale, bool):
            raise ValueError(f"MetaNet: learn_attention_scale must be a bool, got {learn_attention_scale!r}")
        if not isinstance(center_keys, bool):
            raise ValueError(f"MetaNet: center_keys must be a bool, got {center_keys!r}")
        if anchor_fast_weights is not None and (not isinstance(anchor_fast_weights, (int, float))
                                                or isinstance(anchor_fast_weights, bool)
                                                or not math.isfinite(anchor_fast_weights)):
            raise ValueError(f"MetaNet: anchor_fast_weights must be None or a finite number, "
                             f"got {anchor_fast_weights!r}")
        self.center_keys = center_keys
        if learn_attention_scale:
            self.log_attention_scale = nn.Parameter(torch.tensor(float(attention_scale)).log())
        else:
            self.log_attention_scale = None
            self._attention_scale = float(attention_scale)
        self.max_way, self.p, self.fast_layers = max_way, float(p), fast_layers
        self.gradients = gradients
        self.base_learner = BaseMetaLearner(meta_hidden)
        self.key_learner = KeyMetaLearner(meta_hidden)
        if anchor_fast_weights is not None:
            g0 = preprocess_gradients(torch.zeros(()), self.p)  # (2,): a zero gradient, preprocessed
            self.base_learner.anchor(g0, float(anchor_fast_weights))
            self.key_learner.anchor(g0, float(anchor_fast_weights), steps=max_way)
        k = fast_layers or depth + 2
        self._base_fast = self._params_of(self.base, self.base.layer_names()[-k:])
        self._key_fast = self._params_of(self.key, self.key.layer_names()[-k:-1])

    @staticmethod
    def _params_of(net: AugmentedConvNet, layers: list[str]) -> tuple[str, ...]:
        return tuple(n for n, _ in net.named_parameters() if n.rpartition(".")[0] in layers)

    @property
    def gradients(self) -> GradientMode:
        """How the support gradients are taken: ``"vmap"`` or ``"loop"`` (settable)."""
        return self._gradients

    @gradients.setter
    def gradients(self, mode: GradientMode) -> None:
        if mode not in GRADIENT_MODES:
            raise ValueError(f"MetaNet: gradients must be one of {GRADIENT_MODES}, got {mode!r}")
        self._gradients = mode

    @property
    def attention_scale(self) -> Tensor | float:
        """The factor on the attention's cosines: a 0-dim tensor when learned, else a float."""
        if self.log_attention_scale is None:
            return self._attention_scale
        return self.log_attention_scale.exp()

    # ------------------------------------------------------------------ step 1: support gradients
    def support_gradients(self, support_x: Tensor, support_y: Tensor, n_way: int,
                          mode: GradientMode | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Per-example loss gradients of one episode at the slow weights, detached.

        support_x (S, C, H, W), support_y (S,) int64 in 0..n_way−1 -> (base gradients, key
        gradients): dicts keyed by the parameter names of the layers with fast weights (see
        ``fast_layers``), each value (S, *parameter shape). ``mode`` overrides :attr:`gradients`.
        """
        if check_episodes("MetaNet.support_gradients", support_x, support_y, support_x):
            raise ValueError(f"MetaNet.support_gradients: one episode only: support_y must be of shape (S,), got "
                             f"{tuple(support_y.shape)}")
        if not isinstance(n_way, int) or isinstance(n_way, bool) or not 1 <= n_way <= self.max_way:
            raise ValueError(f"MetaNet.support_gradients: n_way must be an int in 1..{self.max_way} (max_way), "
                             f"got {n_way!r}")
        mode = self.gradients if mode is None else mode
        if mode not in GRADIENT_MODES:
            raise ValueError(f"MetaNet.support_gradients: mode must be one of {GRADIENT_MODES}, got {mode!r}")
        support_y = support_y.long()
        base_all = {n: p.detach() for n, p in self.base.named_parameters()}
        key_all = {n: p.detach() for n, p in self.key.named_parameters()}
        base, key = {n: base_all[n] for n in self._base_fast}, {n: key_all[n] for n in self._key_fast}
        base_rest = {n: v for n, v in base_all.items() if n not in base}
        key_rest = {n: v for n, v in key_all.items() if n not in key}

        def example_loss(bp: dict[str, Tensor], kp: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            x, y = x[None], y[None]
            base_loss = F.cross_entropy(functional_call(self.base, {**bp, **base_rest}, (x,), {"n_out": n_way}), y)
            key_loss = F.cross_entropy(functional_call(self.key, {**kp, **key_rest}, (x,), {"n_out": n_way}), y)
            return base_loss + key_loss  # the two nets share no parameter: one gradient gives both

        if mode == "vmap":
            return vmap(grad(example_loss, argnums=(0, 1)), in_dims=(None, None, 0, 0))(base, key, support_x, support_y)
        with torch.enable_grad():  # evaluation runs under no_grad; these gradients are local
            base = {n: v.requires_grad_() for n, v in base.items()}
            key = {n: v.requires_grad_() for n, v in key.items()}
            per_example = [torch.autograd.grad(example_loss(base, key, x, y), [*base.values(), *key.values()])
                           for x, y in zip(support_x, support_y)]
        stacked = [torch.stack(gs) for gs in zip(*per_example)]
        return dict(zip(base, stacked[: len(base)])), dict(zip(key, stacked[len(base):]))

    # ------------------------------------------------------------------ steps 2-4
    @staticmethod
    def _flat(grads: dict[str, Tensor]) -> Tensor:
        """{name: (S, *shape)} -> (S, P)."""
        return torch.cat([g.flatten(1) for g in grads.values()], dim=1)

    @staticmethod
    def _unflat(flat: Tensor, like: dict[str, Tensor], scales: dict[str, float], lead: tuple[int, ...]
                ) -> dict[str, Tensor]:
        """(*lead, P) -> {name: (*lead, *shape) · scale}, with shapes from ``like`` {name: (S, *shape)}."""
        sizes = [g[0].numel() for g in like.values()]
        return {n: c.reshape(*lead, *g.shape[1:]) * scales[n]
                for (n, g), c in zip(like.items(), flat.split(sizes, dim=-1))}

    def _episode(self, sx: Tensor, sy: Tensor, qx: Tensor, n_way: int) -> Tensor:
        """One episode: (S, C, H, W), (S,), (Q, C, H, W) -> logits (Q, n_way)."""
        g_base, g_key = self.support_gradients(sx, sy, n_way)
        key_fast = self._unflat(self.key_learner(preprocess_gradients(self._flat(g_key), self.p)), g_key,
                                self.key.fan_in_scales(), ())
        memory = self.base_learner(preprocess_gradients(self._flat(g_base), self.p))  # (S, P): W*_i per row

        keys = self.key.features(torch.cat([sx, qx]), key_fast)
        r_support, r_query = keys[: sx.shape[0]], keys[sx.shape[0]:]
        if self.center_keys:
            mean = r_support.mean(0, keepdim=True)
            r_support, r_query = r_support - mean, r_query - mean
        cosines = F.normalize(r_query, dim=-1) @ F.normalize(r_support, dim=-1).T  # (Q, S)
        attention = torch.softmax(cosines * self.attention_scale, dim=-1)
        query_fast = self._unflat(attention @ memory, g_base, self.base.fan_in_scales(), (qx.shape[0],))
        return self.base(qx, query_fast, per_example=True, n_out=n_way)

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int | None = None) -> Tensor:
        """Logits of the queries after reading the support set; shapes in the class docstring.
        N = ``n_way`` or support_y.max() + 1; at most ``max_way``. Works under ``torch.no_grad()``
        (the support gradients are taken locally)."""
        batched = check_episodes("MetaNet.predict", support_x, support_y, query_x)
        n = infer_n_way("MetaNet.predict", support_y, n_way)
        if n > self.max_way:
            raise ValueError(f"MetaNet.predict: {n}-way episodes need max_way >= {n}, the model has "
                             f"max_way={self.max_way} (support_y holds labels up to {n - 1})")
        if not batched:
            support_x, support_y, query_x = support_x[None], support_y[None], query_x[None]
        # Each episode has its own fast weights, so episodes run one after another.
        logits = torch.stack([self._episode(sx, sy.long(), qx, n) for sx, sy, qx in zip(support_x, support_y,
                                                                                          query_x)])
        return logits if batched else logits[0]

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int | None = None) -> Tensor:
        """Same as :meth:`predict`."""
        return self.predict(support_x, support_y, query_x, n_way=n_way)

    def loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
             n_way: int | None = None) -> tuple[Tensor, Tensor]:
        """(mean query cross-entropy over all episodes (scalar, differentiable), query accuracy
        (scalar tensor, detached)). query_y (Q,) / (E, Q) int64 in 0..N−1."""
        check_episodes("MetaNet.loss", support_x, support_y, query_x, query_y)
        logits = self.predict(support_x, support_y, query_x, n_way=n_way)
        flat = logits.reshape(-1, logits.shape[-1])
        targets = query_y.reshape(-1).long()
        loss = F.cross_entropy(flat, targets)
        return loss, (flat.detach().argmax(-1) == targets).float().mean()
