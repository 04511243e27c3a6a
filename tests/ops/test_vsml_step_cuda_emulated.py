"""The fused CUDA kernels of vsml_step, run on the CPU by tests/cuda_emu (one host thread per CUDA thread,
real barriers, NaN-poisoned shared memory and outputs, built with AddressSanitizer and UBSan) against
the float64 reference. This is what CI, which has no GPU, knows of their indexing, tiling, reductions
and barriers; the arithmetic of the real device (fast intrinsics, atomics' order) is tested only on a GPU.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from metalearn_ext.ops.vsml_step.reference import vsml_core_reference

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Path:
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("needs g++ (C++20, <barrier>) to build the CUDA kernel emulator")
    exe = tmp_path_factory.mktemp("cuda_emu") / "emu"
    cmd = [cxx, "-std=c++20", "-O1", "-g", "-pthread", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
           f"-I{ROOT / 'csrc'}", f"-I{ROOT / 'tests' / 'cuda_emu'}", str(ROOT / "tests" / "cuda_emu" / "emu.cpp"),
           "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"emulator build failed:\n{res.stderr[-4000:]}"
    return exe


CASES = [  # T, A, B, N, ticks, per-copy W_h, forward / backward target blocks (small: long tiles)
    (1, 1, 1, 8, 1, False, 1000, 1000),
    (2, 3, 5, 8, 2, True, 1, 1),
    (2, 7, 3, 16, 2, False, 1, 1),
    (3, 5, 13, 8, 3, False, 1, 1),  # ticks > 2: the backward's recomputed segments
    (1, 37, 1, 8, 2, False, 1, 1),  # B = 1
    (1, 1, 29, 16, 2, False, 2, 2),  # A = 1
    (2, 9, 11, 32, 2, True, 5, 5),  # N = 32: W_h from shared memory in the backward
    (1, 23, 29, 16, 2, False, 7, 9),  # tiles that wrap rows
    (2, 5, 7, 16, 5, True, 1, 1),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "T{}A{}B{}N{}K{}{}".format(*c[:5], "pc" if c[5] else ""))
def test_emulated_cuda_kernels_match_reference(emulator, case, tmp_path):
    T, A, B, N, ticks, per_copy, fwd_blocks, bwd_blocks = case
    G = 4 * N
    g = torch.Generator().manual_seed(hash(case) % 2**31)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    Tw = T if per_copy else 1
    h, c, row, col, w = r(T, A, B, N), r(T, A, B, N), r(T, A, G), r(T, B, G), r(Tw, G, N) / N**0.5
    ups = [r(T, A, B, N), r(T, A, B, N), r(T, B, N), r(T, A, N)]
    ins = [h, c, row, col, w, *ups]
    (tmp_path / "in.bin").write_bytes(b"".join(x.float().contiguous().numpy().tobytes() for x in ins))
    res = subprocess.run([str(emulator), *map(str, [T, A, B, N, ticks, Tw, fwd_blocks, bwd_blocks]),
                          str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    flat = torch.frombuffer(bytearray((tmp_path / "out.bin").read_bytes()), dtype=torch.float32).double()
    shapes = [(T, A, B, N)] * 2 + [(T, B, N), (T, A, N)] + [(T, A, B, N)] * 2 + [(T, A, G), (T, B, G), (T, G, N)]
    outs = list(torch.split(flat, [torch.Size(s).numel() for s in shapes]))
    outs = [o.reshape(s) for o, s in zip(outs, shapes)]

    leaves = [x.clone().requires_grad_(True) for x in (h, c, row, col, w)]
    want = vsml_core_reference(*leaves, ticks)
    grads = torch.autograd.grad(sum((a * u).sum() for a, u in zip(want, ups)), leaves)
    if not per_copy:
        outs[8] = outs[8].sum(0, keepdim=True)  # the kernel accumulates g_wh per copy
    names = ["h", "c", "fwd_mean", "bwd_mean", "grad_h0", "grad_c0", "g_row", "g_col", "g_wh"]
    for name, got, exp in zip(names, outs, [*want, *grads]):
        assert torch.isfinite(got).all(), f"{name}: non-finite (unwritten?) elements"
        torch.testing.assert_close(got, exp.detach(), rtol=2e-5, atol=2e-5 * max(1.0, exp.abs().max().item()),
                                   msg=lambda m, name=name: f"{name}: {m}")
