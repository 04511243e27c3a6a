"""The op test harness (ARCHITECTURE.md, "three bars"), for every op in metalearn_ext/ops/.

* `backend`: a fixture over every compiled backend ("cpp", "cuda", "triton"), skipped with the reason
  where it is not usable here; a test module that sets `OP = "<op>"` also skips the backends that op
  does not have. `device` is the device of that backend's tensors.
* `nan_filled_allocations()`: torch.empty* returns NaN, so an element a kernel forgets to write fails.
* `float64_truth(reference, inputs, upstream)`: the reference's outputs and input gradients in float64.
* `assert_close_fp32(actual, expected, what)`: the fp32 tolerance, relative to the expected scale.
* `assert_compiles_fullgraph(f, inputs)`: `torch.compile(f, fullgraph=True)` gives f's value and gradients,
  through the kernel's own backward (a fallback to the reference's double backward fails the test).
* `assert_cpu_backend_choice(op, call, inputs, *args)`: cpp for float32 where built, a dtype error for float16
  on cpp, the reference for float16 when no backend is named.

Helpers are imported as `from tests.ops.conftest import ...`.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence

import pytest
import torch
from torch import Tensor

import metalearn_ext
from metalearn_ext.ops import registry
from metalearn_ext.ops.testing import outputs_and_grads

COMPILED_BACKENDS = ["cpp", "cuda", "triton"]
FP32_RTOL = 2e-5  # relative to max(1, the expected value's largest magnitude), as atol too


@pytest.fixture(params=COMPILED_BACKENDS)
def backend(request) -> str:
    name = request.param
    op = getattr(request.module, "OP", None)
    if op is not None and name not in registry.get(op).kernels:
        pytest.skip(f"{op} has no {name} backend")
    st = metalearn_ext.backends()[name]
    if not st.available:
        pytest.skip(f"{name} backend unavailable here: {st.reason}")
    return name


def device_for(backend: str) -> str:
    """The device a backend's tensors live on here (Triton: CUDA if present, else its CPU interpreter)."""
    if backend == "cpp":
        return "cpu"
    if backend == "cuda":
        return "cuda"
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def device(backend: str) -> str:
    return device_for(backend)


@contextlib.contextmanager
def nan_filled_allocations():
    """torch.empty* returns NaN inside: an output or gradient element a kernel forgets to write stays NaN."""
    det, fill = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        assert torch.empty(3).isnan().all()
        yield
    finally:
        torch.use_deterministic_algorithms(det)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def float64_truth(reference: Callable, inputs: Sequence[Tensor], upstream: Sequence[Tensor]
                  ) -> tuple[list[Tensor], list[Tensor]]:
    """The reference in float64 on CPU: the value every fp32 backend is compared with."""
    return outputs_and_grads(reference, [x.double().cpu() for x in inputs], [u.double().cpu() for u in upstream])


def assert_close_fp32(actual: Tensor, expected: Tensor, what: str) -> None:
    expected = expected.to(actual.device, torch.float32)
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=FP32_RTOL, atol=FP32_RTOL * scale, msg=lambda m: f"{what}: {m}")


def assert_compiles_fullgraph(f: Callable[..., Tensor], inputs: Sequence[Tensor],
                              eager: Callable[..., Tensor] | None = None, *, rtol: float = 1e-5, atol: float = 1e-5, grad_rtol: float | None = None) -> None:
    """``torch.compile(f, fullgraph=True)(*inputs)``, a scalar, equals ``eager(*inputs)`` (default ``f`` itself), and
    so do its gradients with respect to every input (each ``requires_grad``). A warning about a double backward is an
    error here: the compiled backward must be the kernel's, not the reference's fallback."""
    eager = eager or f
    compiled = torch.compile(f, fullgraph=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*double backward")
        got = compiled(*inputs)
        g_got = torch.autograd.grad(got, inputs)
        want = eager(*inputs)
        g_want = torch.autograd.grad(want, inputs)
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)
    for i, (a, b) in enumerate(zip(g_got, g_want)):
        torch.testing.assert_close(a, b, rtol=grad_rtol or rtol, atol=atol, msg=lambda m: f"gradient {i}: {m}")


def assert_cpu_backend_choice(op: str, call: Callable[..., object], inputs: Sequence[Tensor], *args: object) -> None:
    """With no backend named, an op picks cpp for float32 CPU tensors where cpp is built and the reference for float16
    (which cpp does not take); naming cpp for float16 is an error saying which dtypes it takes. ``call(*inputs,
    backend=...)`` runs the op; ``args`` follow the tensors in the op's schema (sizes, gamma, ...)."""
    from metalearn_ext.ops.choice import choose_backend

    half = [x.half() for x in inputs]
    if metalearn_ext.backends()["cpp"].available:
        assert choose_backend(op, None, *inputs, *args) == "cpp"
        with pytest.raises(RuntimeError, match="the cpp backend takes float32 or float64, got torch.float16"):
            call(*half, backend="cpp")
    assert choose_backend(op, None, *half, *args) == "reference"
