"""``metalearn train vsml [--config FILE] [--set key=value ...] [--es|--bptt] [--out DIR] [--resume]``."""
from __future__ import annotations

import argparse
import sys

__all__ = ["add_train_subparsers"]


def _train_vsml(args: argparse.Namespace) -> int:
    from metalearn_ext.train.checkpoint import CheckpointError
    from metalearn_ext.train.config import ConfigError, load_config
    from metalearn_ext.train.runner import run_training

    overrides = list(args.set or [])
    if args.method:
        overrides.append(f"train.method={args.method}")
    try:
        cfg = load_config(args.config, overrides)
        return run_training(cfg, args.out, resume=args.resume, log=lambda m: print(m, file=sys.stderr))
    except (ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def add_train_subparsers(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``train vsml ...`` to ``subparsers`` (the top-level ``metalearn`` command's).

    ``train vsml`` sets ``func(args) -> int``: 0 done, 2 bad config or checkpoint, 3 stopped after
    repeated non-finite meta-losses, 130 interrupted (checkpoint saved). Returns the ``train`` parser.
    """
    train = subparsers.add_parser("train", help="meta-train a model")
    models = train.add_subparsers(dest="train_model", metavar="MODEL", required=True)
    p = models.add_parser(
        "vsml", help="meta-train VSML on online classification streams (ES or BPTT)",
        description="Meta-train VSML. Under torchrun the ES population / BPTT meta-batch is split over the "
                    "processes. Files in --out: config.yaml, checkpoint.pt, metrics.jsonl, eval.json.")
    p.add_argument("--config", default="quick", metavar="FILE",
                   help="YAML config file, or a shipped one by name: quick (default, 2-core CPU), paper")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.steps=200 --set model.hidden=[32] (repeatable)")
    method = p.add_mutually_exclusive_group()
    method.add_argument("--es", dest="method", action="store_const", const="es", help="evolution strategies")
    method.add_argument("--bptt", dest="method", action="store_const", const="bptt",
                        help="truncated backpropagation through time")
    p.add_argument("--out", default="runs/vsml", metavar="DIR", help="run directory (default: runs/vsml)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.set_defaults(func=_train_vsml, method=None)
    return train
