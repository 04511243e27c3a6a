"""`vsml_step`: one step of a dense VSML layer (specs/vsml.md §1), on any backend."""
from __future__ import annotations

import torch
from torch import Tensor

from metalearn_ext.ops import registry
from metalearn_ext.ops.choice import choose_backend
from metalearn_ext.ops.registry import Kernel, OpSpec, Verdict
from metalearn_ext.ops.vsml_step.reference import vsml_step_reference
from metalearn_ext.ops.vsml_step.shapes import check_args, fake_vsml_step

__all__ = ["SPEC", "check_args", "vsml_step", "vsml_step_reference"]

FUSED_N = (8, 16, 32)  # state sizes the fused CUDA and Triton kernels are instantiated for


def _fused_n(h: Tensor, *args) -> Verdict:
    N = h.shape[-1]
    return N in FUSED_N, f"supports N in {FUSED_N}, got N={N}"


SPEC = registry.register(OpSpec(
    name="vsml_step",
    reference=vsml_step_reference,
    fake=fake_vsml_step,
    kernels={
        "cpp": Kernel(dtypes=(torch.float32, torch.float64)),
        "cuda": Kernel(dtypes=(torch.float32,), supports=_fused_n),
        "triton": Kernel(dtypes=(torch.float32,), supports=_fused_n),
    },
))


def vsml_step(
    h: Tensor,
    c: Tensor,
    fwd_in: Tensor,
    bwd_in: Tensor,
    weight: Tensor,
    bias: Tensor,
    ticks: int = 1,
    backend: str | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One step (``ticks`` LSTM ticks) of a dense VSML layer whose synapses are shared-parameter LSTMs.

    Args:
        h, c: (T, A, B, N) hidden and cell state of every synapse of T independent copies.
        fwd_in: (T, A, M) forward message arriving at each input neuron a.
        bwd_in: (T, B, M) backward message arriving at each output neuron b.
        weight: (4N, 2M+N) shared, or (T, 4N, 2M+N) per copy; columns [fwd | bwd | h], gates i, f, g, o.
        bias: (4N,) shared, or (T, 4N) per copy.
        ticks: LSTM ticks per step; the messages stay fixed across them.
        backend: "reference", "cpp", "cuda", "triton", or None for the fastest usable one
            (``$METALEARN_BACKEND`` overrides the default).

    Returns:
        (h', c', fwd_mean, bwd_mean): h', c' (T, A, B, N); fwd_mean (T, B, N) = mean over a of h';
        bwd_mean (T, A, N) = mean over b of h'. Inputs are never modified; differentiable w.r.t.
        all six tensors on every backend (twice on the reference; a compiled backend's double
        backward runs through the reference, after a warning).
    """
    check_args(h, c, fwd_in, bwd_in, weight, bias, ticks)
    args = (h, c, fwd_in, bwd_in, weight, bias, ticks)
    name = choose_backend("vsml_step", backend, *args)
    if name == "reference":
        return vsml_step_reference(*args)
    if name == "triton":
        from metalearn_ext.ops.vsml_step.triton import vsml_step_triton

        return vsml_step_triton(*args)
    return tuple(torch.ops.metalearn_ext.vsml_step(*args))  # cpp or cuda: the dispatcher picks by device
