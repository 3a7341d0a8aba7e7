"""`fairseq-nas space {show,sample,list,validate}`: inspect search spaces (no torch needed)."""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from fairseq_nas.errors import SpaceError
from fairseq_nas.space import Subnet, list_builtin_spaces, load_space
from fairseq_nas.space.describe import format_count

SPACE_HELP = "a space YAML file, a builtin name (see `fairseq-nas space list`) or an arch name (supernet_...)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("space", help="show, sample, list and validate search spaces",
                              description="Inspect search spaces.")
    p.set_defaults(func=lambda args: _help(p))
    sub = p.add_subparsers(dest="space_command", metavar="ACTION")

    show = sub.add_parser("show", help="the choices of every dimension and the number of subnets")
    show.add_argument("space", help=SPACE_HELP)
    show.set_defaults(func=cmd_show)

    sample = sub.add_parser("sample", help="sample subnets uniformly; one JSON subnet per line")
    sample.add_argument("space", help=SPACE_HELP)
    sample.add_argument("-n", "--num", type=int, default=1, help="how many subnets (default 1)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    group = sample.add_mutually_exclusive_group()
    group.add_argument("--largest", action="store_true", help="print the largest subnet instead")
    group.add_argument("--smallest", action="store_true", help="print the smallest subnet instead")
    sample.set_defaults(func=cmd_sample)

    lst = sub.add_parser("list", help="the builtin spaces and their sizes")
    lst.set_defaults(func=cmd_list)

    val = sub.add_parser("validate", help="check that a subnet (JSON, or JSON lines) belongs to a space")
    val.add_argument("space", help=SPACE_HELP)
    val.add_argument("subnet", help="a subnet JSON file, or a JSON-lines file of subnets")
    val.set_defaults(func=cmd_validate)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def cmd_show(args: argparse.Namespace) -> int:
    print(load_space(args.space).describe())
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    if args.largest or args.smallest:
        print((space.largest() if args.largest else space.smallest()).to_json())
        return 0
    if args.num < 0:
        raise SpaceError("space sample", "-n", f"expected a non-negative count, got {args.num}")
    rng = random.Random(args.seed)
    for _ in range(args.num):
        print(space.sample(rng).to_json())
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for name in list_builtin_spaces():
        space = load_space(name)
        first = space.description.split(":")[0].strip() if space.description else ""
        rows.append((name, format_count(space.num_subnets()), first))
    w0 = max([len("space")] + [len(r[0]) for r in rows])
    w1 = max([len("subnets")] + [len(r[1]) for r in rows])
    print(f"{'space':<{w0}}  {'subnets':>{w1}}  source")
    for name, count, first in rows:
        print(f"{name:<{w0}}  {count:>{w1}}  {first}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    path = Path(args.subnet)
    if not path.is_file():
        raise SpaceError(str(path), "<file>", "no such subnet file (expected a JSON subnet or JSON lines)")
    lines = [(i, ln) for i, ln in enumerate(path.read_text().splitlines(), 1) if ln.strip()]
    if len(lines) > 1 and all(ln.lstrip().startswith("{") and ln.rstrip().endswith("}") for _, ln in lines):
        for i, ln in lines:  # JSON lines
            source = f"{path}:{i}"
            space.validate_subnet(Subnet.from_json(ln, source), source)
        print(f"ok ({len(lines)} subnets)")
        return 0
    space.validate_subnet(Subnet.load(path), str(path))
    print("ok")
    return 0
