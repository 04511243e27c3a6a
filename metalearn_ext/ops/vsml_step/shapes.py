"""vsml_step's argument checks and fake (shape-only) implementation; the C++ checks say the same."""
from __future__ import annotations

from torch import Tensor


def _shape(*dims) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


def check_args(h, c, fwd_in, bwd_in, weight, bias, ticks) -> None:
    """Raises ValueError naming the argument and the expected shape, like the C++ checks."""
    op = "vsml_step"
    for name, t in (("h", h), ("c", c), ("fwd_in", fwd_in), ("bwd_in", bwd_in), ("weight", weight), ("bias", bias)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not isinstance(ticks, int) or isinstance(ticks, bool) or ticks < 1:
        raise ValueError(f"{op}: ticks must be an int >= 1, got {ticks!r}")
    if h.dim() != 4:
        raise ValueError(f"{op}: h must be of shape (T, A, B, N), got {_shape(*h.shape)}")
    if h.numel() == 0:
        raise ValueError(f"{op}: h must be non-empty (every size >= 1), got {_shape(*h.shape)}")
    if not h.is_floating_point():
        raise ValueError(f"{op}: h must be a floating-point tensor, got {h.dtype}")
    T, A, B, N = h.shape
    if c.shape != h.shape:
        raise ValueError(f"{op}: c must be of shape (T, A, B, N) = {_shape(*h.shape)} like h, got {_shape(*c.shape)}")
    if fwd_in.dim() != 3 or fwd_in.shape[:2] != (T, A) or fwd_in.shape[2] < 1:
        raise ValueError(f"{op}: fwd_in must be of shape (T, A, M) = {_shape(T, A, 'M')} with M >= 1, "
                         f"got {_shape(*fwd_in.shape)}")
    M = fwd_in.shape[2]
    if bwd_in.shape != (T, B, M):
        raise ValueError(f"{op}: bwd_in must be of shape (T, B, M) = {_shape(T, B, M)} (M from fwd_in), "
                         f"got {_shape(*bwd_in.shape)}")
    w_ok = weight.shape == (4 * N, 2 * M + N) or weight.shape == (T, 4 * N, 2 * M + N)
    if not w_ok:
        raise ValueError(f"{op}: weight must be of shape (4N, 2M+N) = {_shape(4 * N, 2 * M + N)} or "
                         f"(T, 4N, 2M+N) = {_shape(T, 4 * N, 2 * M + N)}, got {_shape(*weight.shape)}")
    if bias.shape != (4 * N,) and bias.shape != (T, 4 * N):
        raise ValueError(f"{op}: bias must be of shape (4N,) = {_shape(4 * N)} or (T, 4N) = {_shape(T, 4 * N)}, "
                         f"got {_shape(*bias.shape)}")
    for name, t in (("c", c), ("fwd_in", fwd_in), ("bwd_in", bwd_in), ("weight", weight), ("bias", bias)):
        if t.dtype != h.dtype:
            raise ValueError(f"{op}: {name} must be of dtype {h.dtype} like h, got {t.dtype}")
        if t.device != h.device:
            raise ValueError(f"{op}: {name} must be on device {h.device} like h, got {t.device}")


def fake_vsml_step(h, c, fwd_in, bwd_in, weight, bias, ticks):
    """Empty outputs of the right shapes: h', c' (T, A, B, N), fwd_mean (T, B, N), bwd_mean (T, A, N)."""
    T, A, B, N = h.shape
    return h.new_empty(h.shape), h.new_empty(h.shape), h.new_empty((T, B, N)), h.new_empty((T, A, N))
