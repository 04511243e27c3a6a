"""Model-Agnostic Meta-Learning (Finn et al., ICML 2017) over any nn.Module, on torch.func.

The inner loop runs the wrapped module functionally (``torch.func.functional_call``) on
dictionaries of fast parameters θ' = θ − α ∇θ L_support(θ); nothing is deep-copied, so memory
is the autograd graph of one meta-batch and is freed by its backward.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.overrides import TorchFunctionMode

from metalearn_ext.nn.protonet import check_episodes

__all__ = ["MAML", "norm_parameter_names"]

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def norm_parameter_names(module: nn.Module) -> set[str]:
    """The names (as ``module.named_parameters()`` gives them) of the parameters of its batch,
    instance, group and layer norms: their scales and offsets."""
    return {f"{prefix}.{n}" if prefix else n for prefix, m in module.named_modules() if isinstance(m, _NORMS)
            for n, _ in m.named_parameters(recurse=False)}

LOSSES = ("cross_entropy", "mse")


def _uses_running_stats(module: nn.Module) -> bool:
    """True if some batch-norm layer of ``module`` would update running statistics now."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.training
               for m in module.modules())


def _affine(y: Tensor, weight: Tensor | None, bias: Tensor | None, shape: tuple[int, ...]) -> Tensor:
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


class _ElementaryNorms(TorchFunctionMode):
    """Normalization layers written out in elementary ops while active.

    vmap's batching rules for the backward of batch/instance/layer norm give wrong input
    gradients (pytorch/functorch#534), which the second-order meta-gradient differentiates; the
    same formulas in mean / var / rsqrt are batched correctly.
    """

    _signatures = {f: inspect.signature(f) for f in (F.batch_norm, F.instance_norm, F.layer_norm)}

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func not in self._signatures:
            return func(*args, **kwargs)
        a = self._signatures[func].bind(*args, **kwargs)
        a.apply_defaults()
        a = a.arguments
        x = a["input"]
        if func is F.layer_norm:
            dims = tuple(range(x.dim() - len(a["normalized_shape"]), x.dim()))
            shape = tuple(x.shape[d] for d in dims)
        elif func is F.batch_norm and a["training"] and a["running_mean"] is None:
            dims, shape = (0, *range(2, x.dim())), (1, -1) + (1,) * (x.dim() - 2)
        elif func is F.instance_norm and a["use_input_stats"] and a["running_mean"] is None:
            dims, shape = tuple(range(2, x.dim())), (1, -1) + (1,) * (x.dim() - 2)
        else:  # statistics given (evaluation): elementwise, batched correctly as it is
            return func(*args, **kwargs)
        var, mean = torch.var_mean(x, dim=dims, correction=0, keepdim=True)
        return _affine((x - mean) * torch.rsqrt(var + a["eps"]), a["weight"], a["bias"], shape)


class MAML(nn.Module):
    """MAML around ``module``: adapt on the support set by gradient steps, predict the query.

    The few-shot interface (one task, or E tasks with a leading E):

    * classification (``loss="cross_entropy"``): support_x (S, *X) / (E, S, *X), support_y (S,) /
      (E, S) int64 in 0..N−1, query_x (Q, *X) / (E, Q, *X) → logits (Q, N) / (E, Q, N), where N is
      the module's output size;
    * regression (``loss="mse"``): support_y (S, T) / (E, S, T) float, predictions (Q, T) / (E, Q, T).

    Every trainable parameter of ``module`` is adapted (freeze one with ``requires_grad_(False)``);
    buffers are passed through. Batch norm should use batch statistics
    (``track_running_stats=False``, as in MAML), which ``vectorize=True`` needs. Under
    ``torch.no_grad()`` (evaluation) the inner gradients are still taken, locally, and no graph is
    kept. A ``torch.compile``d module works for ``first_order=True`` only (compiled graphs cannot
    be differentiated twice).

    Args:
        module: the learner; its forward maps (B, *X) to (B, N) or (B, T).
        inner_lr: α, the inner-loop step size (0.4 for Omniglot 5-way, 0.01 for sinusoids).
        inner_steps: inner gradient steps when a call gives no ``steps`` (1 in training; pass
            ``steps=3`` at test as in the paper).
        first_order: drop the second-order terms (FOMAML): the meta-gradient is the query-loss
            gradient at the adapted parameters.
        loss: ``"cross_entropy"`` (classification) or ``"mse"`` (regression), inner and outer.
        learn_inner_lr: make α a learned parameter, one per parameter tensor (``inner_lrs``,
            aligned with :attr:`adapted_names`), trained by the outer optimizer.
        adapt: the names of the trainable parameters the inner loop adapts (None: all of them).
            The others are learned by the outer loop only: MAML's own code adapts the weights
            and biases of its convolutions and output layer, not its batch norm's offsets
            (:func:`norm_parameter_names` lists a module's normalization parameters).
        vectorize: run the E tasks of a batch under ``torch.func.vmap`` (True) or in a Python
            loop (False). None picks by module: the loop if it holds a convolution (per-task
            weights turn convolutions into grouped ones, slower on a CPU: conv-4, 5-way 1-shot,
            16 tasks, one thread, per meta-iteration 0.65 s looped vs 0.74 s vmapped second
            order, 0.32 vs 0.41 s first order; 2.0 vs 10 s with 15 queries per class), else
            vmap (sinusoid MLP, 25 tasks: 3 ms vs 22 ms). Modules whose batch norm updates
            running statistics in training mode always loop.
    """

    def __init__(
        self,
        module: nn.Module,
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        first_order: bool = False,
        loss: Literal["cross_entropy", "mse"] = "cross_entropy",
        learn_inner_lr: bool = False,
        vectorize: bool | None = None,
        adapt: Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise ValueError(f"MAML: module must be an nn.Module, got {type(module).__name__}")
        if not isinstance(inner_lr, (int, float)) or isinstance(inner_lr, bool) or not inner_lr == inner_lr:
            raise ValueError(f"MAML: inner_lr must be a number, got {inner_lr!r}")
        self._check_steps("inner_steps", inner_steps)
        if loss not in LOSSES:
            raise ValueError(f"MAML: loss must be one of {LOSSES}, got {loss!r}")
        self.module = module
        self.inner_steps, self.first_order, self.loss_name = inner_steps, bool(first_order), loss
        if vectorize is None:
            vectorize = not any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())
        self.vectorize = bool(vectorize)
        trainable = [n for n, p in module.named_parameters() if p.requires_grad]
        if adapt is None:
            self._outer_only: frozenset[str] = frozenset()
        else:
            if isinstance(adapt, str):
                raise ValueError(f"MAML: adapt must be parameter names (a list), got the string {adapt!r}")
            adapt = list(adapt)
            unknown = sorted(set(adapt) - set(trainable))
            if unknown:
                raise ValueError(f"MAML: adapt names {unknown}, which are not trainable parameters of the module "
                                 f"(those are {trainable})")
            self._outer_only = frozenset(trainable) - set(adapt)
        self.adapted_names = tuple(n for n in trainable if n not in self._outer_only)
        if not self.adapted_names:
            raise ValueError("MAML: module has no trainable parameters to adapt")
        self._lr_index = {n: i for i, n in enumerate(self.adapted_names)}
        self.inner_lr = float(inner_lr)
        if learn_inner_lr:
            dtype = next(p for n, p in module.named_parameters() if n in self._lr_index).dtype
            self.inner_lrs = nn.Parameter(torch.full((len(self.adapted_names),), self.inner_lr, dtype=dtype))
        else:
            self.inner_lrs = None

    @staticmethod
    def _check_steps(arg: str, steps: object) -> None:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"MAML: {arg} must be an int ≥ 0, got {steps!r}")

    @property
    def regression(self) -> bool:
        """True for ``loss="mse"``: float targets (S, T), no accuracy."""
        return self.loss_name == "mse"

    def _loss(self, out: Tensor, y: Tensor) -> Tensor:
        if self.regression:
            return F.mse_loss(out, y)
        return F.cross_entropy(out, y)

    def _split_params(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(parameters to adapt, everything else the module needs: frozen parameters and buffers)."""
        fast, rest = {}, {}
        for n, p in self.module.named_parameters():
            (fast if p.requires_grad and n not in self._outer_only else rest)[n] = p
        rest.update(self.module.named_buffers())
        unknown = [n for n in fast if n not in self._lr_index]
        if unknown:
            raise ValueError(f"MAML: parameters {unknown} were not trainable when MAML was built; "
                             "build MAML again after changing requires_grad")
        return fast, rest

    def _lrs(self, names: list[str]) -> list[Tensor | float]:
        if self.inner_lrs is None:
            return [self.inner_lr] * len(names)
        return [self.inner_lrs[self._lr_index[n]] for n in names]

    def functional_forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """The module's forward on ``x`` with ``params`` (e.g. from :meth:`adapt`) in place of its own."""
        return functional_call(self.module, params, (x,))

    # One task, looped: torch.autograd.grad on the outer tape.
    def _adapt_one(self, fast: dict[str, Tensor], rest: dict[str, Tensor], x: Tensor, y: Tensor,
                   steps: int) -> dict[str, Tensor]:
        if steps == 0:
            return fast
        names = list(fast)
        lrs = self._lrs(names)
        outer = torch.is_grad_enabled()
        create_graph = outer and not self.first_order
        with torch.enable_grad():
            if not outer:  # evaluation: adapt detached copies, keep no graph between steps
                fast = {n: p.detach().requires_grad_() for n, p in fast.items()}
            for _ in range(steps):
                loss = self._loss(functional_call(self.module, {**rest, **fast}, (x,)), y)
                grads = torch.autograd.grad(loss, list(fast.values()), create_graph=create_graph,
                                            allow_unused=True)
                if outer:
                    fast = {n: p if g is None else p - lr * g
                            for (n, p), g, lr in zip(fast.items(), grads, lrs)}
                else:
                    with torch.no_grad():
                        fast = {n: (p if g is None else p - lr * g).requires_grad_()
                                for (n, p), g, lr in zip(fast.items(), grads, lrs)}
        return fast if outer else {n: p.detach() for n, p in fast.items()}

    def _run_loop(self, sx: Tensor, sy: Tensor, qx: Tensor, steps: int) -> Tensor:
        fast, rest = self._split_params()
        outs = []
        for e in range(sx.shape[0]):
            adapted = self._adapt_one(fast, rest, sx[e], sy[e], steps)
            outs.append(functional_call(self.module, {**rest, **adapted}, (qx[e],)))
        return torch.stack(outs)

    # E tasks under vmap: torch.func.grad inside, the outer tape (if any) records through it.
    def _run_vmap(self, sx: Tensor, sy: Tensor, qx: Tensor, steps: int) -> Tensor:
        fast, rest = self._split_params()
        names = list(fast)
        lrs = self._lrs(names)
        first_order = self.first_order

        def support_loss(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return self._loss(functional_call(self.module, {**rest, **params}, (x,)), y)

        def task(x: Tensor, y: Tensor, query: Tensor) -> Tensor:
            params = fast
            for _ in range(steps):
                grads = grad(support_loss)(params, x, y)
                if first_order:
                    grads = {n: g.detach() for n, g in grads.items()}
                params = {n: params[n] - lr * grads[n] for n, lr in zip(names, lrs)}
            return functional_call(self.module, {**rest, **params}, (query,))

        with _ElementaryNorms():
            return vmap(task, randomness="different")(sx, sy, qx)

    def _run(self, who: str, sx: Tensor, sy: Tensor, qx: Tensor, steps: int | None,
             qy: Tensor | None = None) -> tuple[Tensor, bool]:
        batched = check_episodes(who, sx, sy, qx, qy, regression=self.regression)
        steps = self.inner_steps if steps is None else steps
        self._check_steps("steps", steps)
        if not batched:
            sx, sy, qx = sx[None], sy[None], qx[None]
        if not self.regression:
            sy = sy.long()
        if self.vectorize and not _uses_running_stats(self.module):
            out = self._run_vmap(sx, sy, qx, steps)
        else:
            out = self._run_loop(sx, sy, qx, steps)
        return out, batched

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None) -> dict[str, Tensor]:
        """Fast parameters for one task: support_x (S, *X), support_y (S,) int64 or (S, T) float.

        Returns every parameter of the module by name (adapted ones replaced), ready for
        :meth:`functional_forward`. With gradients enabled they are differentiable w.r.t. the
        module's parameters (second order unless ``first_order``); under ``torch.no_grad()``
        they are detached (the inner gradients are still taken, locally).
        """
        lead = support_y.dim() - (2 if self.regression else 1)
        if lead != 0:
            raise ValueError(f"MAML.adapt: one task only: support_y must be of shape "
                             f"{'(S, T)' if self.regression else '(S,)'}, got {tuple(support_y.shape)}")
        check_episodes("MAML.adapt", support_x, support_y, support_x, regression=self.regression)
        steps = self.inner_steps if steps is None else steps
        self._check_steps("steps", steps)
        fast, rest = self._split_params()
        adapted = self._adapt_one(fast, rest, support_x, support_y if self.regression else support_y.long(), steps)
        return {n: adapted.get(n, p) for n, p in self.module.named_parameters()}

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                steps: int | None = None) -> Tensor:
        """Adapt on each task's support set, then the module's output on its queries:
        logits (Q, N) / (E, Q, N), or predictions (Q, T) / (E, Q, T) for regression.
        Works under ``torch.no_grad()`` (evaluation); ``steps`` overrides ``inner_steps``."""
        out, batched = self._run("MAML.predict", support_x, support_y, query_x, steps)
        return out if batched else out[0]

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                steps: int | None = None) -> Tensor:
        """Same as :meth:`predict`."""
        return self.predict(support_x, support_y, query_x, steps=steps)

    def meta_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  steps: int | None = None) -> tuple[Tensor, Tensor | None]:
        """(mean query loss over tasks after adaptation — scalar, differentiable w.r.t. the module's
        parameters (and ``inner_lrs``) —, query accuracy (detached scalar tensor; None for
        regression)). query_y (Q,) / (E, Q) int64, or (Q, T) / (E, Q, T) float."""
        out, batched = self._run("MAML.meta_loss", support_x, support_y, query_x, steps, query_y)
        if not batched:
            query_y = query_y[None]
        if not self.regression:
            query_y = query_y.long()
        flat_out = out.reshape(-1, *out.shape[2:])
        flat_y = query_y.reshape(-1, *query_y.shape[2:])
        # Every task has Q queries, so the mean over all of them is the mean of the task means.
        loss = self._loss(flat_out, flat_y)
        if self.regression:
            return loss, None
        accuracy = (flat_out.detach().argmax(-1) == flat_y).float().mean()
        return loss, accuracy
