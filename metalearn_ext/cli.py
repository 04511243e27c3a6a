"""The ``metalearn`` command: ``train METHOD | eval RUN_DIR | plot RUN_DIR | list | demo | backends | bench | data``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix: printed in one block, exit code 2, no traceback."""
    from metalearn_ext.config import ConfigError
    from metalearn_ext.train.checkpoint import CheckpointError

    return ConfigError, CheckpointError, FileNotFoundError, NotADirectoryError, PermissionError


def _guard(fn):
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except _user_errors() as e:
            _log(f"error: {e}")
            return EXIT_BAD_INPUT

    return run


def _method_of_run(run_dir: str):
    """The method of the run in ``run_dir``, from its config.yaml (no checkpoint read)."""
    from metalearn_ext.config import ConfigError
    from metalearn_ext.methods import get_method
    from metalearn_ext.train.run_dir import saved_config

    name = saved_config(run_dir).get("method")
    if not isinstance(name, str):
        raise ConfigError(f"{Path(run_dir) / 'config.yaml'} names no method")
    return get_method(name)


@_guard
def _train(args: argparse.Namespace) -> int:
    from metalearn_ext.config import ConfigError
    from metalearn_ext.methods import get_method
    from metalearn_ext.train.config import load_config
    from metalearn_ext.train.loop import resume_config, run_training

    method = get_method(args.method)
    out = args.out or f"runs/{method.name}"
    if args.resume:
        if args.config is not None or args.task is not None:
            raise ConfigError("--resume continues a run with its own config.yaml: drop --config / --task "
                              "(--set train.steps=N extends it)")
        cfg = resume_config(out, method.name, args.set)
    else:
        cfg = load_config(method, args.config, args.set, task=args.task)
    return run_training(cfg, out, resume=args.resume, log=_log)


@_guard
def _eval(args: argparse.Namespace) -> int:
    method = _method_of_run(args.run_dir)
    res = method.evaluate(args.run_dir, args.set or [], log=_log, progress=True)
    print(method.format_results(res))
    return 0


@_guard
def _plot(args: argparse.Namespace) -> int:
    method = _method_of_run(args.run_dir)
    for p in method.plot(Path(args.run_dir), _log):
        print(f"written: {p}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from metalearn_ext.methods import list_methods
    from metalearn_ext.tasks import list_tasks

    tasks = list_tasks()
    for name, m in list_methods().items():
        print(f"{name}: {m.description}")
        print(f"  tasks:      {', '.join(f'{t} ({tasks[t].family})' for t in m.tasks)}")
        print(f"  optimizers: {', '.join(m.optimizers)}")
        print(f"  configs:    {', '.join(m.shipped_configs()) or '-'}")
    return 0


@_guard
def _demo(args: argparse.Namespace) -> int:
    from metalearn_ext.demo import run_demo

    return run_demo(args.out, args.config, args.set, log=_log)


def _add_run_subparsers(subparsers: argparse._SubParsersAction) -> None:
    """``train``, ``eval``, ``plot``, ``list`` and ``demo``: the same for every registered method.

    Exit codes: 0 done, 2 bad input (config, run directory, missing data; one-line reason on
    stderr), 3 stopped after repeated non-finite meta-losses, 130 interrupted (checkpoint saved).
    """
    p = subparsers.add_parser(
        "train", help="meta-train a method (metalearn list shows them)",
        description="Meta-train METHOD into --out: config.yaml, checkpoint.pt (every train.checkpoint_every steps "
                    "and at exit), metrics.jsonl. Ctrl-C or SIGTERM saves and stops; --resume continues exactly. "
                    "Under torchrun the meta-batch (or ES population) is split over the processes. Exit codes: "
                    "0 done, 2 bad input, 3 diverged, 130 interrupted.")
    p.add_argument("method", metavar="METHOD", help="a registered method (see `metalearn list`)")
    p.add_argument("--task", metavar="NAME", help="the task to train on (default: the method's first)")
    p.add_argument("--config", metavar="NAME|FILE",
                   help="a shipped config by name (e.g. quick) or a YAML file (default: the task's default config)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.steps=200 (repeatable)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/METHOD)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out with its own config (--set train.steps=N extends it to N)")
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "eval", help="evaluate a trained run on held-out tasks with its method's protocol",
        description="Run the evaluation protocol of the run's method on RUN_DIR (online accuracy against tuned "
                    "SGD/Adam for online learners; few-shot accuracy with 95% intervals for few-shot models; ...). "
                    "Writes its JSON into RUN_DIR and prints the table. Exit codes: 0 done, 2 bad input.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override an eval.* key, e.g. --set eval.episodes=128 (repeatable)")
    p.set_defaults(func=_eval)

    p = subparsers.add_parser(
        "plot", help="draw a run's curves to PNG",
        description="Write RUN_DIR/training_curve.png and the method's evaluation plots (once `metalearn eval` has "
                    "run; 95% bands). Exit codes: 0 done, 2 missing data.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=_plot)

    p = subparsers.add_parser("list", help="the methods, their tasks, optimizers and shipped configs")
    p.set_defaults(func=_list)

    p = subparsers.add_parser(
        "demo", help="the main job: meta-train VSML on the 8x8 digits, meta-test it, plot (a few minutes on 2 cores)",
        description="Meta-train VSML's quick config, meta-test it against SGD/Adam and a meta-RNN on unseen tasks "
                    "(and Fashion-MNIST if installed), print the comparison table and write the plots into --out. "
                    "Run it again and it reuses (or resumes) the run in --out. Exit codes as for `train`.")
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="run directory (default: runs/demo)")
    p.add_argument("--config", default="quick", metavar="NAME|FILE", help="VSML config (default: quick)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.set_defaults(func=_demo)



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

    _add_run_subparsers(sub)
    add_data_subparser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "bench":  # the benchmark times glibc's defaults and this side by side itself
        from metalearn_ext.allocator import keep_freed_memory

        keep_freed_memory()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
