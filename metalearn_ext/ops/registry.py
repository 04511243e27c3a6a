"""Every op of metalearn_ext and what each of its compiled backends takes.

Each op folder in metalearn_ext/ops/ registers one `OpSpec` when it is imported. The extension
loader (fakes and autograd for the C++/CUDA op), `backends()`, `choose_backend` and the test
harness iterate the registry, so nothing outside an op's folder names the op.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

Verdict = tuple[bool, str]  # (usable, why not: a phrase completing "the <backend> backend ...")


def any_arguments(*args) -> Verdict:
    return True, ""


@dataclass(frozen=True)
class Kernel:
    """One compiled backend of an op ("cpp", "cuda" or "triton").

    dtypes: what it computes in. Other dtypes are an error when the backend is forced.
    supports(*op_args) -> (ok, why not): the sizes it handles, e.g. the state sizes a fused kernel
        was instantiated for. Other sizes fall back to the next fastest backend, with a warning.
    """

    dtypes: tuple[torch.dtype, ...]
    supports: Callable[..., Verdict] = any_arguments


@dataclass(frozen=True)
class OpSpec:
    """An op: the schema `name` in csrc/ops.cpp (torch.ops.metalearn_ext.<name>), with
    `<name>_backward(grad of each output, every input) -> grad of each tensor input` beside it.

    reference: the plain-PyTorch op, same arguments: the truth, and the double backward.
    fake: same arguments, returns empty outputs of the right shapes (torch.compile, FakeTensor).
    kernels: backend name -> Kernel, for the compiled backends the op has ("reference" always exists).
    register_compiled: registers the fakes and autograd of torch.ops.metalearn_ext.<name> once the extension is
        loaded; None: ops/autograd.register (a Python autograd calling `<name>_backward`), or, with
        cpp_autograd, ops/autograd.register_double_backward.
    cpp_autograd: the extension registers the op's autograd in C++ (a node calling `<name>_backward`); Python
        adds the fakes and the double backward only.
    """

    name: str
    reference: Callable
    fake: Callable
    kernels: Mapping[str, Kernel]
    register_compiled: Callable[[], None] | None = None
    cpp_autograd: bool = False

    @property
    def qualname(self) -> str:
        return f"metalearn_ext::{self.name}"


_OPS: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    if spec.name in _OPS and _OPS[spec.name] is not spec:
        raise ValueError(f"op {spec.name!r} is registered twice")
    _OPS[spec.name] = spec
    return spec


def get(name: str) -> OpSpec:
    try:
        return _OPS[name]
    except KeyError:
        raise ValueError(f"no op named {name!r}; registered: {sorted(_OPS)}") from None


def ops() -> tuple[OpSpec, ...]:
    return tuple(_OPS.values())
