"""`fairseq-nas user-dir`: the absolute path to give fairseq's `--user-dir`, so that
`fairseq-train --user-dir "$(fairseq-nas user-dir)"` works from any directory."""
from __future__ import annotations

import argparse
from pathlib import Path


def user_dir() -> Path:
    import fairseq_nas

    return Path(fairseq_nas.__file__).resolve().parent


def add_parser(sub) -> None:
    p = sub.add_parser("user-dir", help="print the plugin folder for fairseq's --user-dir",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=lambda args: print(user_dir()))
