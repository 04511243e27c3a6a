"""The `metalearn` command: `metalearn backends | bench | data download | train`."""
from __future__ import annotations

import argparse
import sys


def _backends(args: argparse.Namespace) -> int:
    import metalearn_ext

    for name, st in metalearn_ext.backends().items():
        print(f"{name:<10} {'yes' if st.available else 'no ':<4} {st.reason}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    try:
        from benchmarks.run import main as bench_main
    except ImportError:
        print("metalearn bench: run it from a source checkout (the benchmarks/ folder is not installed)",
              file=sys.stderr)
        return 2
    argv = ["--op", args.op] + (["--device", args.device] if args.device else [])
    return bench_main(argv + (["--json", args.json] if args.json else []))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metalearn", description="metalearn-ext: fast model-based meta-learning")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("backends", help="which kernel backends are built and usable here")
    b.set_defaults(func=_backends)
    b = sub.add_parser("bench", help="benchmark the kernels (python -m benchmarks.run)")
    b.add_argument("--op", default="vsml_step")
    b.add_argument("--device", choices=["cpu", "cuda"])
    b.add_argument("--json", metavar="FILE")
    b.set_defaults(func=_bench)
    from metalearn_ext.data.cli import add_data_subparser
    from metalearn_ext.train.cli import add_train_subparsers

    add_data_subparser(sub)
    add_train_subparsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
