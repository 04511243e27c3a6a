"""``metalearn data download omniglot|mnist|fashion-mnist --root DIR``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .download import DATASETS, DownloadError, download_dataset


def _run_download(args: argparse.Namespace) -> int:
    try:
        paths = download_dataset(args.name, args.root, mirrors=args.mirror, timeout=args.timeout,
                         progress=lambda line: print(line, file=sys.stderr))
    except (DownloadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the destination cannot be created or written (fetch errors are DownloadErrors)
        where = args.root if args.root is not None else "the default data directory"
        print(f"error: cannot write the {args.name} files under {where}: {e.strerror or e}"
              + (f" ({e.filename})" if e.filename else ""), file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


def add_data_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``data download NAME [--root DIR] [--mirror URL]... [--timeout S]`` to ``subparsers``.

    The ``download`` parser sets ``func``: ``func(args) -> int`` exit code (0 installed,
    1 the download failed, 2 the destination cannot be written; the reason on stderr in one
    line). Returns the ``data`` parser.
    """
    data = subparsers.add_parser("data", help="manage data sets on disk")
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    dl = commands.add_parser(
        "download", help="download a data set and verify its checksums",
        description="Download NAME into ROOT/NAME with checksum verification; on failure "
                    "nothing is left behind.")
    dl.add_argument("name", choices=DATASETS, help="the data set")
    dl.add_argument("--root", default=None,
                    help="data directory (default: $METALEARN_DATA or ~/.cache/metalearn)")
    dl.add_argument("--mirror", action="append", default=None, metavar="URL",
                    help="base URL to fetch from instead of the official ones (repeatable)")
    dl.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds")
    dl.set_defaults(func=_run_download)
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``data`` commands alone: ``python -m metalearn_ext.data.cli download mnist``."""
    parser = argparse.ArgumentParser(prog="metalearn")
    add_data_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
