"""The benchmark runner: `python -m benchmarks.run [--op NAME] [--device cpu|cuda] [--json FILE]`.

Every op's module exposes BENCHES = {name: fn(device) -> rows}; a correctness check runs before any
timing in each of them. Rows go to stdout as a table and, with --json, to a file with the machine.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time

import torch

MODULES = ["benchmarks.bench_vsml_step", "benchmarks.bench_vsml_train", "benchmarks.bench_data"]


def registry() -> tuple[dict, dict]:
    benches, formatters = {}, {}
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            print(f"[benchmarks] skipping {name}: {e}", file=sys.stderr)
            continue
        benches.update(module.BENCHES)
        formatters.update(getattr(module, "FORMATTERS", {}))
    return benches, formatters


def machine() -> dict:
    info = dict(platform=platform.platform(), python=platform.python_version(), torch=torch.__version__,
                cpus=os.cpu_count(), threads=torch.get_num_threads())
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def generic_format(rows: list[dict]) -> str:
    return "\n".join(json.dumps(r) for r in rows)


def main(argv: list[str] | None = None) -> int:
    benches, formatters = registry()
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    p.add_argument("--op", choices=sorted(benches) + ["all"], default="vsml_step")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", metavar="FILE", help="also write the rows and the machine to FILE")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU is visible")
    ops = sorted(benches) if args.op == "all" else [args.op]
    result = {"machine": machine(), "command": "python -m benchmarks.run " + " ".join(argv or sys.argv[1:]),
              "time": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": []}
    print(f"# {result['machine']}")
    for op in ops:
        rows = benches[op](args.device)
        result["rows"] += rows
        print(f"\n## {op} on {args.device}\n" + formatters.get(op, generic_format)(rows), flush=True)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, args.json)
    return 0 if all(r.get("ok", True) for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
