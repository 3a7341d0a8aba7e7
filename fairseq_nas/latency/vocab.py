"""Vocabulary sizes of a fairseq data-bin, without loading fairseq.

fairseq's `Dictionary.load` starts with 4 special symbols (<s>, <pad>, </s>, <unk>) and adds
one symbol per line of dict.LANG.txt ("<token> <count>", optionally "#fairseq:overwrite",
which adds a new symbol too), so a model's embedding has lines + 4 rows.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fairseq_nas.errors import FairseqNasError

NSPECIAL = 4


@dataclass(frozen=True)
class Vocab:
    src: int
    tgt: int
    joined: bool  # one dictionary for both sides (the same file, or identical files)
    src_path: Optional[str] = None
    tgt_path: Optional[str] = None


def dictionary_size(path: Path) -> int:
    """len(fairseq.data.Dictionary.load(path)), checking the line format as fairseq does."""
    n = 0
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            fields = line.rstrip().rsplit(" ", 1)
            if len(fields) == 2 and fields[1] == "#fairseq:overwrite":
                fields = fields[0].rsplit(" ", 1)
            if len(fields) != 2 or not re.fullmatch(r"-?\d+", fields[1]):
                raise FairseqNasError(f"{path}:{i}: expected '<token> <count>' (a fairseq dictionary line), "
                                      f"got {line.rstrip()[:80]!r}")
            n += 1
    return n + NSPECIAL


def _pair_from_data(d: Path, langs: list[str]) -> Optional[tuple[str, str]]:
    """(src, tgt) from binarised file names such as train.de-en.de.idx."""
    for p in sorted(d.glob("*.idx")) + sorted(d.glob("*.bin")):
        m = re.fullmatch(r".*\.([^.\-]+)-([^.\-]+)\.([^.\-]+)\.(idx|bin)", p.name)
        if m and m.group(1) in langs and m.group(2) in langs:
            return m.group(1), m.group(2)
    return None


def data_bin_vocab(directory: str | Path, source_lang: Optional[str] = None,
                   target_lang: Optional[str] = None) -> Vocab:
    """Source and target vocabulary sizes of a data-bin folder (DIR/dict.LANG.txt)."""
    d = Path(directory)
    if not d.is_dir():
        raise FairseqNasError(f"--dict {d}: no such directory (expected a fairseq data-bin with dict.*.txt)")
    dicts = {p.name[len("dict."):-len(".txt")]: p for p in sorted(d.glob("dict.*.txt"))}
    if not dicts:
        raise FairseqNasError(f"--dict {d}: no dict.*.txt files (expected the output folder of fairseq-preprocess)")
    langs = sorted(dicts)
    if source_lang is None and target_lang is None:
        if len(dicts) == 1:
            source_lang = target_lang = langs[0]
        else:
            pair = _pair_from_data(d, langs)
            if pair is None:
                raise FairseqNasError(f"--dict {d}: cannot tell source from target among dict.{{{','.join(langs)}}}"
                                      ".txt; give --source-lang and --target-lang")
            source_lang, target_lang = pair
    elif source_lang is None or target_lang is None:
        raise FairseqNasError("give both --source-lang and --target-lang (or neither)")
    for flag, lang in (("--source-lang", source_lang), ("--target-lang", target_lang)):
        if lang not in dicts:
            raise FairseqNasError(f"{flag} {lang}: no {d / f'dict.{lang}.txt'} (found: {', '.join(langs)})")
    sp, tp = dicts[source_lang], dicts[target_lang]
    joined = sp.resolve() == tp.resolve() or sp.read_bytes() == tp.read_bytes()
    return Vocab(dictionary_size(sp), dictionary_size(tp), joined, str(sp), str(tp))


def parse_vocab_size(text: str) -> Vocab:
    """'V' (one joined vocabulary) or 'SRC,TGT'."""
    try:
        parts = [int(x) for x in str(text).split(",")]
        if len(parts) not in (1, 2):
            raise ValueError
    except ValueError:
        raise FairseqNasError(f"--vocab-size {text!r}: expected V or SRC,TGT (integers)") from None
    for v in parts:
        if v <= NSPECIAL:
            raise FairseqNasError(f"--vocab-size {text!r}: a vocabulary needs more than the {NSPECIAL} special "
                                  "symbols")
    if len(parts) == 1:
        return Vocab(parts[0], parts[0], True)
    return Vocab(parts[0], parts[1], parts[0] == parts[1])
