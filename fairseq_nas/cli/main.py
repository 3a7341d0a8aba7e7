"""`fairseq-nas` entry point: one subcommand per module, imported only when it is run.

To add a subcommand, append one line to SUBCOMMANDS: (name, module, one-line help). The
module defines `add_parser(subparsers)`, which adds a parser called `name` and sets
`func(args) -> int | None` on it.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Optional, Sequence

from fairseq_nas.errors import FairseqNasError

SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("space", "fairseq_nas.cli.space_cmd", "show, sample, list and validate search spaces"),
    ("bleu", "fairseq_nas.cli.bleu_cmd", "score fairseq-generate output: tokenized BLEU and sacreBLEU"),
    ("export", "fairseq_nas.cli.export_cmd", "export a subnet of a supernet checkpoint as a nas_subnet checkpoint"),
    ("latency", "fairseq_nas.cli.latency_cmd", "measure the latency of subnets on this device (HAT's protocol)"),
    ("collect", "fairseq_nas.cli.collect_cmd", "inherited-weight validation loss of sampled subnets (archs.jsonl)"),
    ("rank", "fairseq_nas.cli.rank_cmd", "fit a ranker on archs.jsonl: Kendall tau, importance, pruned space"),
    ("report", "fairseq_nas.cli.report_cmd", "plots of runs: DSS divergence histograms and loss curves"),
    ("search", "fairseq_nas.cli.search_cmd", "search a space under a latency limit: best.json, top K, pareto.png"),
    ("user-dir", "fairseq_nas.cli.user_dir_cmd", "print the plugin folder for fairseq's --user-dir (any directory)"),
]


def _command_name(argv: Sequence[str]) -> Optional[str]:
    """The subcommand named on the command line (the first argument that is not an option)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser; only the chosen subcommand's module is imported (keeps `--help` fast)."""
    parser = argparse.ArgumentParser(
        prog="fairseq-nas", description="Transformer architecture search for fairseq: spaces, latency, "
                                        "ranking, search and export.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _command_name(argv)
    for name, module, help_text in SUBCOMMANDS:
        if name == chosen:
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def _configure_logging() -> None:
    """INFO to stderr, as fairseq's commands log. Done before fairseq is imported: one of its
    modules calls ``logging.basicConfig(level=DEBUG)`` on import, which would otherwise flood
    the output with matplotlib's debug messages."""
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S", level=os.environ.get("LOGLEVEL", "INFO").upper(),
                        stream=sys.stderr)
    from fairseq_nas.quiet import quiet_hydra_warnings

    quiet_hydra_warnings()


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _configure_logging()
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help(sys.stderr if args.command is None else sys.stdout)
            return 2 if args.command is None else 0
        return int(func(args) or 0)
    except FairseqNasError as e:
        print(f"fairseq-nas: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fairseq-nas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `fairseq-nas space sample ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
