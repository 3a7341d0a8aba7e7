"""`fairseq-nas bleu`: tokenized BLEU (as the papers report) and sacreBLEU of fairseq-generate output."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bleu", help="score fairseq-generate output: tokenized BLEU and sacreBLEU with signature",
        description="Reads the output of fairseq-generate (run it with --remove-bpe or --post-process so H-/T- "
                    "lines hold tokenized words). Prints case-sensitive tokenized BLEU on tokenized references "
                    "(the papers' metric) and sacreBLEU on Moses-detokenized output, with its signature.")
    p.add_argument("generate_output", help="a file with fairseq-generate's stdout")
    p.add_argument("--lang", default="en", help="target language for Moses detokenization (default: en)")
    p.add_argument("--raw-ref", help="untokenized references for sacreBLEU (default: detokenized T- lines)")
    p.add_argument("--json", dest="json_out", help="also write the scores as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fairseq_nas.bleu import score_generate_file, write_report

    report = score_generate_file(args.generate_output, args.lang, args.raw_ref)
    if args.json_out:  # before printing: a closed stdout must not lose the file
        write_report(report, args.json_out)
    print(report)
    return 0
