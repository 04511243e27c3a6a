"""The CUDA kernels of content_read and mann_memory_step, run on the CPU by tests/cuda_emu (one host thread
per CUDA thread, real barriers, NaN-poisoned shared memory and outputs, AddressSanitizer and UBSan) against
the float64 reference: what CI, which has no GPU, knows of their indexing, phases, reductions and barriers.
The device's own arithmetic (expf, rounding order) is tested only on a GPU.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from metalearn_ext.ops.content_read import content_read_reference
from metalearn_ext.ops.content_read import inputs as read_inputs
from metalearn_ext.ops.mann_memory_step import inputs as step_inputs
from metalearn_ext.ops.mann_memory_step import mann_memory_step_reference
from metalearn_ext.ops.testing import outputs_and_grads

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Path:
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("needs g++ (C++20, <barrier>) to build the CUDA kernel emulator")
    exe = tmp_path_factory.mktemp("cuda_emu") / "mann_emu"
    cmd = [cxx, "-std=c++20", "-O1", "-g", "-pthread", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
           f"-I{ROOT / 'csrc'}", f"-I{ROOT / 'tests' / 'cuda_emu'}", str(ROOT / "tests" / "cuda_emu" / "mann_emu.cpp"),
           "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert res.returncode == 0, f"emulator build failed:\n{res.stderr[-4000:]}"
    return exe


def run_emulator(emulator, tmp_path, args, inputs, shapes):
    (tmp_path / "in.bin").write_bytes(b"".join(x.float().contiguous().numpy().tobytes() for x in inputs))
    res = subprocess.run([str(emulator), *map(str, args), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")],
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-4000:]
    flat = torch.frombuffer(bytearray((tmp_path / "out.bin").read_bytes()), dtype=torch.float32).double()
    return [o.reshape(s) for o, s in zip(torch.split(flat, [torch.Size(s).numel() for s in shapes]), shapes)]


def assert_matches(got, want, names):
    for name, a, e in zip(names, got, want):
        assert torch.isfinite(a).all(), f"{name}: non-finite (unwritten?) elements"
        torch.testing.assert_close(a, e, rtol=2e-5, atol=2e-5 * max(1.0, e.abs().max().item()),
                                   msg=lambda m, name=name: f"{name}: {m}")


# S = 300 > 256 threads: every strided loop wraps (slow under the emulator's barriers).
SHAPES = [(2, 3, 13, 7), (1, 1, 1, 1), pytest.param((1, 4, 300, 5), marks=pytest.mark.slow, id="1x4x300x5")]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("with_beta", [False, True], ids=["beta_none", "beta"])
def test_emulated_content_read(emulator, tmp_path, shape, with_beta):
    B, H, S, W = shape
    inputs = read_inputs.make_inputs(*shape, with_beta=with_beta, dtype=torch.float64)
    upstream = read_inputs.make_upstream(*shape, dtype=torch.float64)
    shapes = [(B, H, S), (B, H, W), (B, S, W), (B, H, W)] + ([(B, H)] if with_beta else [])
    got = run_emulator(emulator, tmp_path, ["content_read", B, H, S, W, int(with_beta)], inputs + upstream, shapes)
    out, grads = outputs_and_grads(content_read_reference, inputs, upstream)
    assert_matches(got, [*out, *grads], ["weights", "reads", "grad memory", "grad keys", "grad beta"])


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_emulated_mann_memory_step(emulator, tmp_path, shape, ties):
    B, H, S, W = shape
    inputs = step_inputs.make_inputs(*shape, dtype=torch.float64, usage_ties=ties)
    upstream = step_inputs.make_upstream(*shape, dtype=torch.float64)
    shapes = [(B, S, W), (B, H, S), (B, H, W), (B, S), (B, H, S), (B, S, W), (B, S), (B, H, S), (B, H, W),
              (B, H, W), (B, H)]
    got = run_emulator(emulator, tmp_path, ["mann_memory_step", B, H, S, W, 0.95], inputs + upstream, shapes)
    out, grads = outputs_and_grads(lambda *a: mann_memory_step_reference(*a, 0.95), inputs, upstream)
    assert_matches(got, [*out, *grads], ["memory'", "read_weights'", "reads", "usage'", "write_weights",
                                         *(f"grad {n}" for n in ("memory", "usage", "read_weights", "keys", "add",
                                                                 "alpha"))])
