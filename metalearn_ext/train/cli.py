"""``metalearn train vsml [--config FILE] [--set key=value ...] [--es|--bptt] [--out DIR] [--resume]``,
``metalearn eval RUN_DIR``, ``metalearn plot RUN_DIR`` and ``metalearn demo [--out DIR]``."""
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


def _eval(args: argparse.Namespace) -> int:
    from metalearn_ext.train.checkpoint import CheckpointError
    from metalearn_ext.train.config import ConfigError
    from metalearn_ext.train.meta_test import META_TEST, format_table, run_meta_test

    try:
        res = run_meta_test(args.run_dir, args.set, log=lambda m: print(m, file=sys.stderr), progress=True)
    except (ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(res))
    print(f"\nwritten: {args.run_dir}/{META_TEST}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from metalearn_ext.train.plot import plot_run

    try:
        paths = plot_run(args.run_dir)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(f"written: {p}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from metalearn_ext.train.checkpoint import CheckpointError
    from metalearn_ext.train.config import ConfigError
    from metalearn_ext.train.demo import run_demo

    try:
        return run_demo(args.out, args.config, args.set, resume=args.resume, log=lambda m: print(m, file=sys.stderr))
    except (ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def add_train_subparsers(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``train vsml ...``, ``eval``, ``plot`` and ``demo`` to ``subparsers`` (the top-level
    ``metalearn`` command's).

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

    p = subparsers.add_parser(
        "eval", help="meta-test a trained run against SGD/Adam and a meta-RNN on unseen tasks",
        description="Meta-test RUN_DIR on held-out tasks, projected held-out tasks and an unseen data set "
                    "(Fashion-MNIST when installed) beside online SGD/Adam (linear and MLP, learning rate tuned on "
                    "meta-training tasks) and a meta-RNN. Writes RUN_DIR/meta_test.json, prints the table. "
                    "Exit codes: 0 done, 2 bad run directory or --set key.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override an eval.* key, e.g. --set eval.episodes=128 (repeatable)")
    p.set_defaults(func=_eval)

    p = subparsers.add_parser(
        "plot", help="draw a run's meta-training and online-accuracy curves to PNG",
        description="Write RUN_DIR/training_curve.png (meta-loss per step) and, once `metalearn eval` has run, "
                    "RUN_DIR/online_accuracy.png (every learner, 95%% bands). Exit codes: 0 done, 2 missing data.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=_plot)

    p = subparsers.add_parser(
        "demo", help="the main job: meta-train VSML on the 8x8 digits, meta-test it, plot (a few minutes on 2 cores)",
        description="Meta-train the quick config, meta-test it against SGD/Adam and a meta-RNN on unseen tasks "
                    "(and Fashion-MNIST if installed), print the comparison table and write the plots into --out. "
                    "Exit codes as for `train vsml`.")
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="run directory (default: runs/demo)")
    p.add_argument("--config", default="quick", metavar="FILE",
                   help="YAML config file or shipped name (default: quick)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo run in --out")
    p.set_defaults(func=_demo)
    return train
