"""`fairseq-nas report dss SAVE_DIR`: plots of a Dynamic Space Shrinking run."""
from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="plots and summaries of runs",
                              description="Plots and summaries of runs.")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    sub = p.add_subparsers(dest="report_command", metavar="WHAT")
    dss = sub.add_parser(
        "dss", help="divergence histograms and loss curves of a --sampler dss run",
        description="Reads SAVE_DIR/dss.jsonl and SAVE_DIR/dss_divergence.jsonl (written by fairseq-train "
                    "--sampler dss) and writes dss_divergence.png (subnet divergence before/after each shrink) "
                    "and dss_losses.png (training/validation losses and the DSS validator's losses). fairseq "
                    "writes no log file by default: pass saved fairseq-train output (or its --log-file) with "
                    "--log, in json or simple --log-format (with --no-progress-bar).")
    dss.add_argument("save_dir", help="the run's --save-dir (or --dss-dir)")
    dss.add_argument("--log", action="append", default=[], metavar="FILE",
                     help="saved fairseq-train output for the loss curves (repeatable: e.g. a run and its resume)")
    dss.add_argument("--out", default=None, help="output folder (default SAVE_DIR)")
    dss.set_defaults(func=cmd_dss)


def cmd_dss(args: argparse.Namespace) -> int:
    from fairseq_nas.report.dss import report_dss, summary

    paths = report_dss(args.save_dir, args.log, args.out)
    text = summary(args.save_dir)
    if text:
        print(text)
    for path in paths:
        print(f"wrote {path}")
    return 0
