"""The benchmark runner: `python -m benchmarks.run [--op NAME] [--device cpu|cuda] [--json FILE]`.

Every benchmarks/bench_*.py is found and imported; each exposes BENCHES = {name: fn(device) -> rows}
and optionally FORMATTERS = {name: fn(rows) -> table}. A correctness check runs before any timing in
each of them. Rows go to stdout as a table and, with --json, to a file with the machine.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import pkgutil
import sys
import time

import torch

import benchmarks


def modules() -> list[str]:
    """The module names of every benchmarks/bench_*.py."""
    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__, "benchmarks.")
                  if m.name.rpartition(".")[2].startswith("bench_"))


def registry() -> tuple[dict, dict]:
    """(bench name -> fn(device) -> rows, bench name -> fn(rows) -> table) over every bench module."""
    benches, formatters, origin = {}, {}, {}
    for name in modules():
        try:
            module = importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - one broken or half-written module must not stop the others
            print(f"[benchmarks] skipping {name}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        for bench in module.BENCHES:
            if bench in origin:
                raise ValueError(f"benchmark {bench!r} is defined twice: in {origin[bench]} and in {name}")
            origin[bench] = name
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
