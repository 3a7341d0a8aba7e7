#!/usr/bin/env python3
"""Text steps of data-prep/prepare-parallel.sh: tokenize, train and apply sentencepiece BPE.

    text_pipeline.py tokenize --lang de [--moses] [--lowercase] [--workers N] IN OUT
    text_pipeline.py spm-train --prefix P --vocab-size N [--sample N] [--workers N] [--seed S] IN [IN ...]
    text_pipeline.py spm-encode --model M [--workers N] IN OUT

Lines are split on "\\n" only (never on other Unicode line breaks), so the line
count, and the pairing of the two sides, is kept exactly.  Outputs are written
to a temporary name and renamed.  Errors are one line on stderr, exit status 1.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Iterator

PROG = "text_pipeline.py"
CHUNK = 2000


class PipelineError(Exception):
    pass


def read_lines(path: str) -> Iterator[str]:
    """Lines of a UTF-8 file split on b"\\n" only; undecodable bytes become U+FFFD."""
    with open(path, "rb") as f:
        for raw in f:
            yield raw.rstrip(b"\n").decode("utf-8", errors="replace")


def chunks(it: Iterator[str], size: int = CHUNK) -> Iterator[list[str]]:
    buf: list[str] = []
    for x in it:
        buf.append(x)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


def write_lines(path: str, lines_chunks) -> int:
    tmp = path + ".tmp"
    n = 0
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for chunk in lines_chunks:
            for line in chunk:
                f.write(line + "\n")
            n += len(chunk)
    os.replace(tmp, path)
    return n


# ---------------------------------------------------------------------------
# tokenize

_state: dict = {}


def _init_worker(lang: str, moses: bool, lowercase: bool) -> None:
    _state.clear()
    _state.update(lang=lang, moses=moses, lowercase=lowercase)
    if moses:
        from sacremoses import MosesPunctNormalizer, MosesTokenizer

        _state["norm"] = MosesPunctNormalizer(lang=lang)
        _state["tok"] = MosesTokenizer(lang=lang)


def _process_chunk(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        line = " ".join(line.split())  # any Unicode whitespace (\r, \u2028, tabs, NBSP) -> one space
        if _state["moses"] and line:
            line = _state["norm"].normalize(line)
            line = _state["tok"].tokenize(line, escape=False, return_str=True)
            line = " ".join(line.split())
        if _state["lowercase"]:
            line = line.lower()
        out.append(line)
    return out


def cmd_tokenize(a) -> None:
    if a.workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(a.workers, _init_worker, (a.lang, a.moses, a.lowercase)) as pool:
            write_lines(a.output, pool.imap(_process_chunk, chunks(read_lines(a.input))))
    else:
        _init_worker(a.lang, a.moses, a.lowercase)
        write_lines(a.output, map(_process_chunk, chunks(read_lines(a.input))))


# ---------------------------------------------------------------------------
# sentencepiece

_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


def cmd_spm_train(a) -> None:
    import sentencepiece as spm

    spm.set_random_generator_seed(a.seed)
    os.makedirs(os.path.dirname(os.path.abspath(a.prefix)), exist_ok=True)
    vocab = a.vocab_size
    for _ in range(2):
        try:
            spm.SentencePieceTrainer.train(
                input=a.inputs,
                model_prefix=a.prefix,
                model_type="bpe",
                vocab_size=vocab,
                character_coverage=1.0,
                input_sentence_size=a.sample,
                shuffle_input_sentence=True,
                num_threads=a.workers,
                normalization_rule_name="identity",  # pieces concatenate back to the input exactly
                minloglevel=2,
            )
            break
        except RuntimeError as e:
            msg = str(e)
            m = _TOO_HIGH.search(msg)
            if m and vocab != int(m.group(2)):
                vocab = int(m.group(2))
                print(f"{PROG}: warning: --bpe-size {a.vocab_size} is too large for this training text; "
                      f"using the largest possible, {vocab}", file=sys.stderr)
                continue
            m = _TOO_SMALL.search(msg)
            if m:
                need = m.group(2)
                raise PipelineError(f"--bpe-size {a.vocab_size} is too small: the training text needs at "
                                    f"least {need} pieces (its characters and 3 special symbols)") from None
            lines = msg.strip().splitlines() or ["unknown error"]
            raise PipelineError("sentencepiece training failed: " + lines[-1]) from None
    sp = spm.SentencePieceProcessor(model_file=a.prefix + ".model")
    print(sp.get_piece_size())


def cmd_spm_encode(a) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=a.model)

    def encode(lines):
        for chunk in chunks(lines, 10000):
            yield [" ".join(p) for p in sp.encode(chunk, out_type=str, num_threads=a.workers)]

    write_lines(a.output, encode(read_lines(a.input)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tokenize")
    t.add_argument("--lang", required=True)
    t.add_argument("--moses", action="store_true", help="Moses punctuation normalization + tokenization")
    t.add_argument("--lowercase", action="store_true")
    t.add_argument("--workers", type=int, default=1)
    t.add_argument("input")
    t.add_argument("output")
    s = sub.add_parser("spm-train")
    s.add_argument("--prefix", required=True)
    s.add_argument("--vocab-size", type=int, required=True)
    s.add_argument("--sample", type=int, default=2_000_000, help="sentences sampled for training")
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("inputs", nargs="+")
    e = sub.add_parser("spm-encode")
    e.add_argument("--model", required=True)
    e.add_argument("--workers", type=int, default=1)
    e.add_argument("input")
    e.add_argument("output")
    a = p.parse_args(argv)
    try:
        {"tokenize": cmd_tokenize, "spm-train": cmd_spm_train, "spm-encode": cmd_spm_encode}[a.cmd](a)
    except (PipelineError, OSError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
