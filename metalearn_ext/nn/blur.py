"""BLUR: a network whose neurons and synapses hold k states and learn by a meta-learned rule
(Sandler et al. 2021; specs/blur.md §1–2). No gradient is computed inside its learning loop."""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn_ext.nn.blur_genome import GENOME_NAMES, BLURGenome, backprop_genome_values
from metalearn_ext.ops import blur_hebbian, blur_propagate
from metalearn_ext.ops.blur_step.reference import ACTIVATIONS
from metalearn_ext.ops.choice import choose_backend

__all__ = ["ACTIVATIONS", "BLUR", "LABEL_ENCODINGS"]

LABEL_ENCODINGS = ("one_hot", "pm1")

Params = dict[str, Tensor]


class BLUR(nn.Module):
    """A BLUR network D = layer_sizes[0] → … → C = layer_sizes[-1] of T independent copies.

    Neuron states of layer l are (T, batch, n_l, k), synapses of layer l (T, n_l, n_{l+1}, k): the
    *learned* state, carried in ``self.state`` (a list over layers) and not a parameter. The
    meta-parameters are the genome (:class:`BLURGenome`: one for the network, or one per layer),
    the log initial synapse scale per layer (learnable with ``learn_init_scale``) and a log logit
    scale (logits = scale · state 0 of the output: it changes no prediction, only how sharp the
    softmax of the meta-loss is, since tanh outputs lie in (−1, 1)).

    One learning step on a batch (:meth:`learning_step`, spec §2): neuron states start at zero and
    the standardized input goes into state 0 of layer 0; forward through the layers; the
    prediction is state 0 of the output; the label goes into state 1 of the output (one-hot, or
    ±1 with ``label_encoding="pm1"``; states 2… are set to 0); backward through the hidden layers
    (the input layer keeps the data: an activation there would clip it); Hebbian update of every
    layer's synapses, then L2 normalization of each synapse column over its inputs.

    Args:
        layer_sizes: (D, hidden…, C).
        states: k >= 2.
        per_layer_genome: one genome per layer instead of one for the network.
        normalize: synapse normalization after every update (the paper calls it essential).
        oja: Oja's decay term in the update.
        label_encoding: "one_hot" or "pm1".
        hidden_activation, output_activation: σ of hidden layers / of the output, a key of
            :data:`ACTIVATIONS` (the paper's: relu∘tanh and tanh).
        init_scale: initial synapse scale (columns of unit L2 norm times this; 1/√n_l·N(0, 1)
            times this without normalization).
        learn_init_scale: meta-learn the initial scale (per layer): a small one would let step 1
            act like a prototype classifier, as SGD from zero weights does (spec §6).
        tie_channels: initial synapses equal on every channel (what the backprop genome needs).
        genome_init, genome_lr, genome_noise: see :class:`BLURGenome` (init, lr, noise).
        logit_scale: the initial logit scale.
        backend: the ops' backend (None: the fastest usable one).
        fused: run each learning step as one ``blur_step`` call (forward, label, backward pass and update
            of every layer in one C++ call, its gradient in one more), and the forward pass of :meth:`predict`
            as one ``blur_forward`` call: None uses them where their cpp kernel can run these tensors (CPU,
            float32/float64, backend None or "cpp", $METALEARN_BACKEND not forcing another); True requires
            them (an error says why they cannot run); False never.
    """

    def __init__(self, layer_sizes: Sequence[int], states: int = 2, *, per_layer_genome: bool = False,
                 normalize: bool = True, oja: bool = False, label_encoding: str = "one_hot",
                 hidden_activation: str = "relu_tanh", output_activation: str = "tanh", init_scale: float = 1.0,
                 learn_init_scale: bool = False, tie_channels: bool = False, genome_init: str = "backprop",
                 genome_lr: float = 0.05, genome_noise: float = 0.1, logit_scale: float = 5.0,
                 backend: str | None = None, fused: bool | None = None) -> None:
        super().__init__()
        sizes = [int(s) for s in layer_sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"BLUR: layer_sizes must be (D, hidden..., C) with every size >= 1, got {sizes}")
        if states < 2:
            raise ValueError(f"BLUR: states must be >= 2 (the label goes into state 1), got {states}")
        if label_encoding not in LABEL_ENCODINGS:
            raise ValueError(f"BLUR: label_encoding must be one of {LABEL_ENCODINGS}, got {label_encoding!r}")
        for name, act in (("hidden_activation", hidden_activation), ("output_activation", output_activation)):
            if act not in ACTIVATIONS:
                raise ValueError(f"BLUR: {name} must be one of {tuple(ACTIVATIONS)}, got {act!r}")
        if fused not in (None, True, False):
            raise ValueError(f"BLUR: fused must be None, True or False, got {fused!r}")
        if fused and backend not in (None, "cpp"):
            raise ValueError(f"BLUR: fused=True runs the cpp kernel of blur_step, but backend={backend!r}")
        if not (init_scale > 0 and logit_scale > 0):
            raise ValueError(f"BLUR: init_scale and logit_scale must be positive, got {init_scale}, {logit_scale}")
        self.sizes, self.states = sizes, states
        self.per_layer_genome, self.normalize, self.oja = per_layer_genome, normalize, oja
        self.label_encoding, self.tie_channels, self.backend = label_encoding, tie_channels, backend
        self.fused = fused
        self.hidden_activation, self.output_activation = hidden_activation, output_activation
        L = len(sizes) - 1
        self.genome = BLURGenome(states, L if per_layer_genome else 1, genome_init, genome_lr, genome_noise)
        log_scale = torch.full((L,), math.log(init_scale))
        if learn_init_scale:
            self.log_init_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_init_scale", log_scale)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))
        self.register_buffer("input_mean", torch.zeros(sizes[0]))
        self.register_buffer("input_std", torch.ones(sizes[0]))
        self.state: list[Tensor] | None = None

    @classmethod
    def backprop(cls, layer_sizes: Sequence[int], lr: float, states: int = 2, **kwargs) -> BLUR:
        """A BLUR that is SGD with learning rate ``lr`` on ½Σ_b‖y − ŷ‖² of a bias-free linear network
        (one-hot y), for any depth: identity activations, no normalization, channels tied at
        init, the genome of :func:`~metalearn_ext.nn.blur_genome.backprop_genome_values`."""
        model = cls(layer_sizes, states, normalize=False, hidden_activation="identity",
                    output_activation="identity", tie_channels=True, **kwargs)
        model.genome.load_values(backprop_genome_values(states, lr))
        return model

    @property
    def input_dim(self) -> int:
        return self.sizes[0]

    @property
    def num_classes(self) -> int:
        return self.sizes[-1]

    @property
    def num_layers(self) -> int:
        return len(self.sizes) - 1

    def set_input_stats(self, mean: Tensor, std: Tensor) -> None:
        """Per-feature statistics (D,) of the meta-training inputs; inputs become (x − mean) / std."""
        D = self.input_dim
        if mean.shape != (D,) or std.shape != (D,):
            raise ValueError(f"BLUR.set_input_stats: mean and std must be of shape ({D},), got "
                             f"{tuple(mean.shape)} and {tuple(std.shape)}")
        if not (std > 0).all():
            raise ValueError("BLUR.set_input_stats: std must be positive")
        self.input_mean.copy_(mean)
        self.input_std.copy_(std)

    # ------------------------------------------------------------------------------ parameters
    def num_meta_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def per_copy_parameters(self, theta: Tensor) -> Params:
        """Flat per-copy meta-parameters (T, P) (e.g. ES members) -> name -> (T, *shape)."""
        P = self.num_meta_parameters()
        if theta.dim() != 2 or theta.shape[1] != P:
            raise ValueError(f"BLUR.per_copy_parameters: theta must be of shape (T, {P}), got {tuple(theta.shape)}")
        out, offset = {}, 0
        for name, p in self.named_parameters():
            out[name] = theta[:, offset : offset + p.numel()].reshape(theta.shape[0], *p.shape)
            offset += p.numel()
        return out

    def _params(self, params: Tensor | Params | None) -> tuple[Params, bool]:
        """(name -> value, per_copy): the module's own values, or per-copy ones with a leading T."""
        if params is None:
            own = {f"genome.{n}": v for n, v in self.genome.shared().items()}
            return {**own, "log_init_scale": self.log_init_scale, "log_logit_scale": self.log_logit_scale}, False
        if isinstance(params, Tensor):
            params = self.per_copy_parameters(params)
        if "log_init_scale" not in params:  # a buffer when the scale is not learned
            params = {**params, "log_init_scale": self.log_init_scale.expand(len(params["log_logit_scale"]), -1)}
        return params, True

    def _gene(self, p: Params, per_copy: bool, name: str, layer: int) -> Tensor:
        """Genome entry ``name`` of ``layer``: () / (k, k) shared, (T,) / (T, k, k) per copy."""
        g = layer if self.per_layer_genome else 0
        v = p[f"genome.{name}"]
        return v[:, g] if per_copy else v[g]

    # ----------------------------------------------------------------------------------- state
    def initial_state(self, copies: int, generator: torch.Generator | Sequence[torch.Generator] | None = None,
                      params: Tensor | Params | None = None) -> list[Tensor]:
        """Fresh synapses for ``copies`` copies: per layer (T, n_l, n_{l+1}, k), N(0, 1) drawn on the
        CPU from ``generator`` (or copy t from ``generator[t]``, so a copy's synapses do not depend on
        which other copies are drawn with it), normalized per column (or divided by √n_l) and scaled."""
        if isinstance(generator, Sequence) and len(generator) != copies:
            raise ValueError(f"BLUR.initial_state: {len(generator)} generators for {copies} copies")
        p, per_copy = self._params(params)
        ref = self.input_mean
        out = []
        for l, (a, b) in enumerate(itertools.pairwise(self.sizes)):
            shape = (a, b, 1 if self.tie_channels else self.states)
            if isinstance(generator, Sequence):
                w = torch.cat([torch.randn(1, *shape, generator=g) for g in generator])
            else:
                w = torch.randn(copies, *shape, generator=generator)
            w = w.to(ref).expand(-1, -1, -1, self.states)
            w = w * torch.rsqrt((w * w).sum(1, keepdim=True) + 1e-12) if self.normalize else w / math.sqrt(a)
            scale = p["log_init_scale"][:, l].exp().view(-1, 1, 1, 1) if per_copy else p["log_init_scale"][l].exp()
            out.append(w * scale)
        return out

    def reset_state(self) -> None:
        """Forget everything learned: the next ``learn`` starts from fresh synapses."""
        self.state = None

    # -------------------------------------------------------------------------------- learning
    def _standardize(self, x: Tensor) -> Tensor:
        return (x.to(self.input_mean.dtype) - self.input_mean) / self.input_std

    def _label_code(self, labels: Tensor, like: Tensor) -> Tensor:
        onehot = F.one_hot(labels, self.num_classes).to(like.dtype)
        return 2 * onehot - 1 if self.label_encoding == "pm1" else onehot

    def _forward_states(self, weights: list[Tensor], x: Tensor, p: Params, per_copy: bool) -> list[Tensor]:
        """Neuron states per layer, (T, batch, n_l, k), after the forward pass of standardized x (T, batch, D)."""
        a = torch.cat([x.unsqueeze(-1), x.new_zeros(*x.shape, self.states - 1)], -1)
        acts = [a]
        for l, w in enumerate(weights):
            eta = self._gene(p, per_copy, "eta", l)
            act = ACTIVATIONS[self.output_activation if l == self.num_layers - 1 else self.hidden_activation]
            # the f·a term of spec §2 vanishes here: every step starts from zeroed neuron states
            msg = blur_propagate(a, w, self._gene(p, per_copy, "nu", l), backend=self.backend)
            a = act(_per_copy(eta, per_copy) * msg)
            acts.append(a)
        return acts

    def _stacked_genes(self, p: Params, per_copy: bool, names: Sequence[str]) -> list[Tensor]:
        """Genes ``names`` of every layer as the fused ops take them: (L,) / (L, k, k), per copy (L, T) / (L, T, k, k)."""
        L, stacked = self.num_layers, []
        for name in names:
            v = p[f"genome.{name}"]
            v = v.transpose(0, 1) if per_copy else v
            stacked.append(v.expand(L, *v.shape[1:]) if v.shape[0] != L else v)
        return stacked

    def _runs_fused(self, op: str, *args) -> bool:
        """Whether ``op`` (blur_step, blur_forward) runs its cpp kernel on these arguments (see ``fused``)."""
        if self.fused is False or (self.fused is None and self.backend not in (None, "cpp")):
            return False
        try:
            backend = choose_backend(op, "cpp" if self.fused else self.backend, *args)
        except RuntimeError as e:
            if not self.fused:  # backend="cpp" forced: the per-op path would raise the same
                raise
            raise RuntimeError(f"BLUR: fused=True cannot run here: {e}") from None
        return backend == "cpp"

    def _fused_genome(self, weights: list[Tensor], x: Tensor, p: Params, per_copy: bool) -> tuple[Tensor, ...] | None:
        """The genes of every layer as ``blur_step`` takes them ((L,) / (L, k, k), per copy (L, T) / (L, T, k, k)),
        if learning steps on these tensors run fused (see ``fused``), else None."""
        if self.fused is False or (self.fused is None and self.backend not in (None, "cpp")):
            return None
        # f, eta, f_hebb, eta_hebb, nu, mu, nu_hebb, mu_hebb: blur_step's order
        stacked = self._stacked_genes(p, per_copy, GENOME_NAMES)
        # blur_step's arguments as the backend choice sees them (x stands in for the label code: same device
        # and dtype, and the choice reads no other shape of it)
        args = (weights, x, x, *stacked, self.normalize, self.oja, self.hidden_activation, self.output_activation)
        return tuple(stacked) if self._runs_fused("blur_step", *args) else None

    def _fused_forward_genes(self, weights: list[Tensor], x: Tensor, p: Params, per_copy: bool
                             ) -> tuple[Tensor, Tensor] | None:
        """(eta, nu) of every layer as ``blur_forward`` takes them, if the forward pass of :meth:`predict` runs
        fused on these tensors (see ``fused``), else None."""
        if self.fused is False or (self.fused is None and self.backend not in (None, "cpp")):
            return None
        eta, nu = self._stacked_genes(p, per_copy, ("eta", "nu"))
        args = (weights, x, eta, nu, self.hidden_activation, self.output_activation)
        return (eta, nu) if self._runs_fused("blur_forward", *args) else None

    def _fused_step(self, weights: list[Tensor], x: Tensor, code: Tensor, genome: tuple[Tensor, ...]
                    ) -> tuple[list[Tensor], Tensor]:
        new, pred = torch.ops.metalearn_ext.blur_step(weights, x, code, *genome, self.normalize, self.oja,
                                                      self.hidden_activation, self.output_activation)
        return list(new), pred

    def learning_step(self, weights: list[Tensor], x: Tensor, code: Tensor, params: Tensor | Params | None = None
                      ) -> tuple[list[Tensor], Tensor]:
        """One learning step on a batch (the unit a fused kernel can replace).

        Args:
            weights: per layer (T, n_l, n_{l+1}, k).
            x: (T, batch, D) standardized inputs.
            code: (T, batch, C) the labels' encoding (one-hot or ±1).
            params: None (the module's meta-parameters) or per-copy ones (see :meth:`per_copy_parameters`).

        Returns:
            (new weights, the output's state 0 (T, batch, C) before the update).
        """
        p, per_copy = self._params(params)
        genome = self._fused_genome(weights, x, p, per_copy)
        if genome is not None:
            return self._fused_step(weights, x, code, genome)
        acts = self._forward_states(weights, x, p, per_copy)
        top = acts[-1]
        pred = top[..., 0]
        acts[-1] = torch.cat([pred.unsqueeze(-1), code.unsqueeze(-1), top.new_zeros(*pred.shape, self.states - 2)], -1)
        act = ACTIVATIONS[self.hidden_activation]
        for l in range(self.num_layers - 1, 0, -1):  # hidden layers only: layer 0 holds the data
            f, eta = (_per_copy(self._gene(p, per_copy, n, l), per_copy) for n in ("f", "eta"))
            msg = blur_propagate(acts[l + 1], weights[l], self._gene(p, per_copy, "mu", l), transpose=True,
                                 backend=self.backend)
            acts[l] = act(f * acts[l] + eta * msg)
        new = [blur_hebbian(w, acts[l], acts[l + 1], self._gene(p, per_copy, "nu_hebb", l),
                            self._gene(p, per_copy, "mu_hebb", l), self._gene(p, per_copy, "f_hebb", l),
                            self._gene(p, per_copy, "eta_hebb", l), normalize=self.normalize, oja=self.oja,
                            backend=self.backend)
               for l, w in enumerate(weights)]
        return new, pred

    def _logits(self, pred: Tensor, p: Params, per_copy: bool) -> Tensor:
        scale = p["log_logit_scale"].exp()
        return pred * (scale.view(-1, *([1] * (pred.dim() - 1))) if per_copy else scale)

    def _check_batches(self, who: str, inputs: Tensor, labels: Tensor) -> None:
        D = self.input_dim
        if inputs.dim() != 4 or inputs.shape[-1] != D:
            raise ValueError(f"BLUR.{who}: inputs must be of shape (T, steps, batch, {D}), got {tuple(inputs.shape)}")
        if labels.shape != inputs.shape[:3]:
            raise ValueError(f"BLUR.{who}: labels must be of shape (T, steps, batch) = {tuple(inputs.shape[:3])}, "
                             f"got {tuple(labels.shape)}")
        if labels.dtype != torch.int64:
            raise TypeError(f"BLUR.{who}: labels must be int64 class indices, got {labels.dtype}")

    def unroll(self, weights: list[Tensor], inputs: Tensor, labels: Tensor, params: Tensor | Params | None = None
               ) -> tuple[list[Tensor], Tensor]:
        """``steps`` learning steps, differentiable w.r.t. the meta-parameters and ``weights``.

        Args:
            weights: per layer (T, n_l, n_{l+1}, k), e.g. :meth:`initial_state`.
            inputs: (T, steps, batch, D) raw inputs (standardized here with the stored statistics).
            labels: (T, steps, batch) int64 in 0..C−1.

        Returns:
            (the weights after the last step, logits (T, steps, batch, C): each batch's prediction
            before its own update).
        """
        self._check_batches("unroll", inputs, labels)
        p, per_copy = self._params(params)
        x = self._standardize(inputs)
        code = self._label_code(labels, x)
        genome = self._fused_genome(weights, x[:, 0], p, per_copy)
        preds = []
        if genome is not None:  # the op resolved once, one unbind per input: the Python per step is a call
            step = torch.ops.metalearn_ext.blur_step.default
            flags = (self.normalize, self.oja, self.hidden_activation, self.output_activation)
            for xs, cs in zip(x.unbind(1), code.unbind(1)):
                weights, pred = step(weights, xs, cs, *genome, *flags)
                preds.append(pred)
            weights = list(weights)
        else:
            for s in range(inputs.shape[1]):
                weights, pred = self.learning_step(weights, x[:, s], code[:, s], p if per_copy else None)
                preds.append(pred)
        return weights, self._logits(torch.stack(preds, 1), p, per_copy)

    def predict(self, inputs: Tensor, weights: list[Tensor] | None = None, params: Tensor | Params | None = None
                ) -> Tensor:
        """Logits (T, n, C) of the forward pass of raw inputs (T, n, D) through ``weights`` (default:
        the learned ``self.state``); nothing is learned."""
        if inputs.dim() != 3 or inputs.shape[-1] != self.input_dim:
            raise ValueError(f"BLUR.predict: inputs must be of shape (T, n, {self.input_dim}), got "
                             f"{tuple(inputs.shape)}")
        weights = self.state if weights is None else weights
        if weights is None:
            raise ValueError("BLUR.predict: nothing learned yet (no weights given and no state); call learn() first")
        if weights[0].shape[0] != inputs.shape[0]:
            raise ValueError(f"BLUR.predict: inputs has T = {inputs.shape[0]} but the synapses have "
                             f"{weights[0].shape[0]} copies")
        p, per_copy = self._params(params)
        x = self._standardize(inputs)
        genes = self._fused_forward_genes(weights, x, p, per_copy)
        if genes is not None:  # the forward pass of every layer in one call (and its gradient in one more)
            pred = torch.ops.metalearn_ext.blur_forward.default(list(weights), x, *genes, self.hidden_activation,
                                                                self.output_activation)
        else:
            pred = self._forward_states(weights, x, p, per_copy)[-1][..., 0]
        return self._logits(pred, p, per_copy)

    def learn(self, inputs: Tensor, labels: Tensor, params: Tensor | Params | None = None,
              generator: torch.Generator | None = None) -> Tensor:
        """Learn from ``steps`` batches per copy with the learned rule, without gradients.

        Args:
            inputs: (T, steps, batch, D) raw inputs (standardized with the stored statistics).
            labels: (T, steps, batch) int64 in 0..C−1.
            params: None or per-copy meta-parameters (T, P).
            generator: draws the initial synapses if fresh ones are needed.

        Returns:
            logits (T, steps, batch, C): each batch's prediction before its update.

        The synapses continue from the previous call (fresh after ``reset_state()`` or when none
        exist) and are kept in ``self.state``; :meth:`predict` uses them.
        """
        self._check_batches("learn", inputs, labels)
        T = inputs.shape[0]
        with torch.no_grad():
            if self.state is None:
                self.state = self.initial_state(T, generator, params)
            elif self.state[0].shape[0] != T:
                raise ValueError(f"BLUR.learn: the learned state has {self.state[0].shape[0]} copies but inputs has "
                                 f"T = {T}; call reset_state() first")
            self.state, logits = self.unroll(self.state, inputs, labels, params)
        return logits


def _per_copy(s: Tensor, per_copy: bool) -> Tensor:
    """A genome scalar () or (T,), shaped to scale neuron states (T, batch, n, k)."""
    return s.view(-1, 1, 1, 1) if per_copy else s

