#!/usr/bin/env python3
"""Text steps of prepare-iwslt14.sh and prepare-wmt14.sh (the classic fairseq recipes).

    corpus_tools.py train-tags --mode classic|all SRC_IN TGT_IN SRC_OUT TGT_OUT
    corpus_tools.py segs IN.xml|IN.sgm OUT
    corpus_tools.py tokenize --lang L [--normalize] [--remove-non-printing] [--aggressive-dash]
                             [--lowercase] [--workers N] --out OUT IN [IN ...]
    corpus_tools.py filter --src L1 --tgt L2 [--min-len 1] [--max-len 175] [--ratio 1.5]
                           [--holdout-every K --holdout PREFIX] [--sample N --seed S] IN_PREFIX OUT_PREFIX
    corpus_tools.py checksum --record FILE [--expect NAME=HEX ...] [--force] ARCHIVE [ARCHIVE ...]

train-tags   IWSLT's train.tags.*: drop the talk headers.  classic = fairseq's
             prepare-iwslt14.sh: drop lines containing <url>, <talkid> or <keywords>,
             remove the <title>/<description> tags but keep their text; all = drop every
             line that starts with '<'.  A pair is dropped when either side is.
segs         the text of each <seg id="N"> ... </seg> of an IWSLT .xml or WMT .sgm file, one
             per line, with U+2019 replaced by "'" (as the classic recipes do).
tokenize     sacremoses (Moses) tokenization of the concatenated inputs, no HTML escaping;
             --normalize / --remove-non-printing / --aggressive-dash mirror Moses'
             normalize-punctuation.perl, remove-non-printing-char.perl and tokenizer.perl -a.
checksum     the sha256 of each archive, checked against --expect (a user-given or known
             value) and against the value recorded in --record (sha256sum format, one
             "HEX  NAME" line per archive name) by an earlier run; new names are recorded,
             --force replaces a recorded value that differs.
filter       Moses' clean-corpus-n: drop a pair if a side is empty, has fewer than --min-len
             or more than --max-len tokens, or the length ratio exceeds --ratio either way;
             then every K-th kept pair goes to the holdout (awk 'NR % K == 0'), and --sample
             keeps N random training pairs (seeded, in file order).

Lines are split on "\\n" only, so line counts and pairing are exact.  Outputs are
written to a temporary name and renamed.  Errors are one line on stderr, exit 1, prefixed
with $DATA_PREP_PROG (the calling script) when set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from text_pipeline import chunks, read_lines, write_lines  # noqa: E402  (the sibling helper)

# Errors carry the calling script's name (DATA_PREP_PROG), so a user sees "prepare-wmt14.sh: error: ...".
PROG = os.environ.get("DATA_PREP_PROG") or "corpus_tools.py"


class CorpusError(Exception):
    pass


def _open_out(path: str):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return open(path + ".tmp", "w", encoding="utf-8", newline="\n")


def _commit(*paths: str) -> None:
    for p in paths:
        os.replace(p + ".tmp", p)


def _pairs(src: str, tgt: str):
    """Line pairs of two files; a differing line count is an error naming both files."""
    a, b = read_lines(src), read_lines(tgt)
    n = 0
    sentinel = object()
    while True:
        x, y = next(a, sentinel), next(b, sentinel)
        if x is sentinel and y is sentinel:
            return
        if x is sentinel or y is sentinel:
            na = n + (x is not sentinel) + sum(1 for _ in a)
            nb = n + (y is not sentinel) + sum(1 for _ in b)
            raise CorpusError(f"line counts differ: {src} has {na} lines, {tgt} has {nb}")
        n += 1
        yield x, y


# ---------------------------------------------------------------------------
# train-tags

CLASSIC_DROP = ("<url>", "<talkid>", "<keywords>")
CLASSIC_STRIP = re.compile(r"</?(?:title|description)>")


def clean_tag_line(line: str, mode: str) -> str | None:
    """The line to keep (tags removed) or None to drop it."""
    if mode == "classic":
        if any(tag in line for tag in CLASSIC_DROP):
            return None
        return CLASSIC_STRIP.sub("", line)
    return None if line.lstrip().startswith("<") else line


def cmd_train_tags(a) -> None:
    kept = dropped = tag_like = 0
    with _open_out(a.src_out) as fs, _open_out(a.tgt_out) as ft:
        for x, y in _pairs(a.src_in, a.tgt_in):
            cx, cy = clean_tag_line(x, a.mode), clean_tag_line(y, a.mode)
            if cx is None or cy is None:
                dropped += 1
                continue
            kept += 1
            tag_like += cx.lstrip().startswith("<") or cy.lstrip().startswith("<")
            fs.write(cx + "\n")
            ft.write(cy + "\n")
    _commit(a.src_out, a.tgt_out)
    if kept == 0:
        raise CorpusError(f"no text left in {a.src_in} after dropping the tag lines")
    print(json.dumps({"kept": kept, "dropped": dropped, "tag_like": tag_like}))


# ---------------------------------------------------------------------------
# segs

SEG = re.compile(r"<seg\b[^>]*>(.*?)</seg>", re.IGNORECASE)


def cmd_segs(a) -> None:
    n = 0
    with _open_out(a.output) as f:
        for line in read_lines(a.input):
            for m in SEG.finditer(line):
                f.write(" ".join(m.group(1).replace("\u2019", "'").split()) + "\n")
                n += 1
    if n == 0:
        os.remove(a.output + ".tmp")
        raise CorpusError(f"{a.input} has no <seg id=...>...</seg> lines")
    _commit(a.output)
    print(n)


# ---------------------------------------------------------------------------
# tokenize

_state: dict = {}


def _init_worker(opts: dict) -> None:
    from sacremoses import MosesPunctNormalizer, MosesTokenizer

    _state.clear()
    _state.update(opts)
    _state["norm"] = MosesPunctNormalizer(lang=opts["lang"])
    _state["tok"] = MosesTokenizer(lang=opts["lang"])
    if opts["remove_non_printing"]:
        import regex  # a dependency of sacremoses; the stdlib re has no \p{C}

        _state["nonprint"] = regex.compile(r"\p{C}")


def _tokenize_chunk(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        if _state["normalize"]:
            line = _state["norm"].normalize(line)
        if _state["remove_non_printing"]:
            line = _state["nonprint"].sub(" ", line)
        line = " ".join(line.split())
        if line:
            line = _state["tok"].tokenize(line, aggressive_dash_splits=_state["aggressive_dash"], escape=False,
                                          return_str=True)
            line = " ".join(line.split())
        if _state["lowercase"]:
            line = line.lower()
        out.append(line)
    return out


def _all_lines(paths: list[str]):
    for p in paths:
        yield from read_lines(p)


def cmd_tokenize(a) -> None:
    opts = {"lang": a.lang, "normalize": a.normalize, "remove_non_printing": a.remove_non_printing,
            "aggressive_dash": a.aggressive_dash, "lowercase": a.lowercase}
    for p in a.inputs:
        if not os.path.isfile(p):
            raise CorpusError(f"no such file: {p}")
    if a.workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(a.workers, _init_worker, (opts,)) as pool:
            n = write_lines(a.out, pool.imap(_tokenize_chunk, chunks(_all_lines(a.inputs))))
    else:
        _init_worker(opts)
        n = write_lines(a.out, map(_tokenize_chunk, chunks(_all_lines(a.inputs))))
    print(n)


# ---------------------------------------------------------------------------
# filter

def keep_pair(x: str, y: str, min_len: int, max_len: int, ratio: float) -> str | None:
    """None to keep the pair, else the reason to drop it (clean-corpus-n.perl's rules)."""
    nx, ny = len(x.split()), len(y.split())
    if nx == 0 or ny == 0:
        return "empty"
    if nx > max_len or ny > max_len:
        return "too_long"
    if nx < min_len or ny < min_len:
        return "too_short"
    if nx / ny > ratio or ny / nx > ratio:
        return "ratio"
    return None


def cmd_filter(a) -> None:
    if a.min_len < 1 or a.max_len < a.min_len or a.ratio < 1:
        raise CorpusError("need 1 <= --min-len <= --max-len and --ratio >= 1")
    if (a.holdout_every is None) != (a.holdout is None):
        raise CorpusError("--holdout-every and --holdout go together")
    if a.holdout_every is not None and a.holdout_every < 2:
        raise CorpusError(f"--holdout-every must be at least 2, got {a.holdout_every}")
    src_in, tgt_in = f"{a.in_prefix}.{a.src}", f"{a.in_prefix}.{a.tgt}"
    src_out, tgt_out = f"{a.out_prefix}.{a.src}", f"{a.out_prefix}.{a.tgt}"
    stats = {"input": 0, "empty": 0, "too_long": 0, "too_short": 0, "ratio": 0, "kept": 0, "holdout": 0}
    hold = [_open_out(f"{a.holdout}.{lang}") for lang in (a.src, a.tgt)] if a.holdout else None
    train = 0
    with _open_out(src_out) as fs, _open_out(tgt_out) as ft:
        for x, y in _pairs(src_in, tgt_in):
            stats["input"] += 1
            why = keep_pair(x, y, a.min_len, a.max_len, a.ratio)
            if why:
                stats[why] += 1
                continue
            x, y = " ".join(x.split()), " ".join(y.split())
            stats["kept"] += 1
            if hold and stats["kept"] % a.holdout_every == 0:
                hold[0].write(x + "\n")
                hold[1].write(y + "\n")
                stats["holdout"] += 1
            else:
                fs.write(x + "\n")
                ft.write(y + "\n")
                train += 1
    if hold:
        for h in hold:
            h.close()
    if train == 0:
        raise CorpusError(f"no training pair of {src_in} / {tgt_in} passes the length filter "
                          f"({a.min_len}-{a.max_len} tokens, ratio {a.ratio})")
    if a.sample and a.sample < train:
        chosen = set(random.Random(a.seed).sample(range(train), a.sample))
        with _open_out(src_out + ".s") as fs, _open_out(tgt_out + ".s") as ft:
            for i, (x, y) in enumerate(_pairs(src_out + ".tmp", tgt_out + ".tmp")):
                if i in chosen:
                    fs.write(x + "\n")
                    ft.write(y + "\n")
        os.replace(src_out + ".s.tmp", src_out + ".tmp")
        os.replace(tgt_out + ".s.tmp", tgt_out + ".tmp")
        train = a.sample
    _commit(src_out, tgt_out)
    if hold:
        _commit(f"{a.holdout}.{a.src}", f"{a.holdout}.{a.tgt}")
    stats["train"] = train
    print(json.dumps(stats))


# ---------------------------------------------------------------------------


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_record(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if os.path.exists(path):
        for line in read_lines(path):
            parts = line.split()
            if len(parts) == 2:
                out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def cmd_checksum(a) -> None:
    expect: dict[str, str] = {}
    for item in a.expect:
        name, sep, hexdigest = item.partition("=")
        if not sep or not re.fullmatch(r"[0-9a-fA-F]{64}", hexdigest):
            raise CorpusError(f"--expect {item!r}: expected NAME=HEX with 64 hex digits")
        expect[name] = hexdigest.lower()
    record = read_record(a.record)
    changed = False
    for path in a.archives:
        name = os.path.basename(path)
        digest = sha256_of(path)
        if name in expect and digest != expect[name]:
            raise CorpusError(f"{path}: sha256 is {digest}, expected {expect[name]}; the file is corrupt, "
                              "incomplete or another release")
        if name in record and record[name] != digest and not a.force:
            raise CorpusError(f"{path}: sha256 is {digest}, but {a.record} records {record[name]} for {name} from "
                              "an earlier run; use another --out, or --force to start over from this file")
        how = "matches --sha256" if name in expect else ("matches the record" if name in record else "recorded")
        if record.get(name) != digest:
            record[name] = digest
            changed = True
        print(f"{name} {digest} {how}")
    if changed:
        os.makedirs(os.path.dirname(os.path.abspath(a.record)), exist_ok=True)
        with open(a.record + ".tmp", "w", encoding="utf-8") as f:
            for name in sorted(record):
                f.write(f"{record[name]}  {name}\n")
        _commit(a.record)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train-tags")
    t.add_argument("--mode", choices=("classic", "all"), default="classic")
    for name in ("src_in", "tgt_in", "src_out", "tgt_out"):
        t.add_argument(name)
    s = sub.add_parser("segs")
    s.add_argument("input")
    s.add_argument("output")
    k = sub.add_parser("tokenize")
    k.add_argument("--lang", required=True)
    k.add_argument("--normalize", action="store_true", help="Moses punctuation normalization first")
    k.add_argument("--remove-non-printing", action="store_true", help="Unicode category C -> space")
    k.add_argument("--aggressive-dash", action="store_true", help="split hyphens (tokenizer.perl -a)")
    k.add_argument("--lowercase", action="store_true")
    k.add_argument("--workers", type=int, default=1)
    k.add_argument("--out", required=True)
    k.add_argument("inputs", nargs="+")
    f = sub.add_parser("filter")
    f.add_argument("--src", required=True)
    f.add_argument("--tgt", required=True)
    f.add_argument("--min-len", type=int, default=1)
    f.add_argument("--max-len", type=int, default=175)
    f.add_argument("--ratio", type=float, default=1.5)
    f.add_argument("--holdout-every", type=int)
    f.add_argument("--holdout")
    f.add_argument("--sample", type=int, default=0, help="keep N random training pairs (0 = all)")
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("in_prefix")
    f.add_argument("out_prefix")
    c = sub.add_parser("checksum")
    c.add_argument("--record", required=True, help="sha256sum-format file of recorded checksums")
    c.add_argument("--expect", action="append", default=[], metavar="NAME=HEX")
    c.add_argument("--force", action="store_true", help="replace recorded checksums that differ")
    c.add_argument("archives", nargs="+")
    a = p.parse_args(argv)
    commands = {"train-tags": cmd_train_tags, "segs": cmd_segs, "tokenize": cmd_tokenize, "filter": cmd_filter,
                "checksum": cmd_checksum}
    try:
        commands[a.cmd](a)
    except (CorpusError, OSError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
