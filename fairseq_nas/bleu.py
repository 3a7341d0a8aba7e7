"""BLEU the way the papers report it, and sacreBLEU with its signature.

- tokenized BLEU: case-sensitive BLEU of tokenized hypotheses against tokenized references
  (what multi-bleu.perl / fairseq-generate's BLEU4 compute; RankNAS, ShrinkNAS and HAT report this);
- sacreBLEU: hypotheses detokenized (Moses) scored against detokenized (or raw) references
  with sacreBLEU's own tokenizer, reported with its signature.
No torch or fairseq import.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from fairseq_nas.atomic import atomic_write_text
from fairseq_nas.errors import FairseqNasError

_LINE = re.compile(r"^(H|T|S|D)-(\d+)\t(.*)$")


@dataclass
class BleuReport:
    sentences: int
    tokenized_bleu: float
    tokenized_signature: str
    sacrebleu: float
    sacrebleu_signature: str

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"tokenized BLEU = {self.tokenized_bleu:.2f}  ({self.tokenized_signature})\n"
                f"sacreBLEU      = {self.sacrebleu:.2f}  ({self.sacrebleu_signature})\n"
                f"sentences      = {self.sentences}")


def parse_generate_output(text: str, source: str = "generate output") -> tuple[list[str], list[str]]:
    """(hypotheses, references) in sentence-id order from fairseq-generate's H-/T- lines."""
    hyps: dict[int, str] = {}
    refs: dict[int, str] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        kind, idx, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "H":
            hyps[idx] = rest.split("\t", 1)[1] if "\t" in rest else ""
        elif kind == "T":
            refs[idx] = rest
    if not hyps:
        raise FairseqNasError(f"{source}: no H-<id> lines (expected the output of fairseq-generate)")
    missing = sorted(set(hyps) - set(refs))
    if missing:
        raise FairseqNasError(f"{source}: hypothesis {missing[0]} has no T-{missing[0]} reference line")
    ids = sorted(hyps)
    return [hyps[i] for i in ids], [refs[i] for i in ids]


def detokenize(lines: list[str], lang: str) -> list[str]:
    from sacremoses import MosesDetokenizer

    md = MosesDetokenizer(lang=lang)
    return [md.detokenize(line.split()) for line in lines]


def score(hyps: list[str], refs: list[str], lang: str = "en", raw_refs: Optional[list[str]] = None) -> BleuReport:
    import sacrebleu

    if len(hyps) != len(refs) or (raw_refs is not None and len(raw_refs) != len(hyps)):
        raise FairseqNasError(f"{len(hyps)} hypotheses but {len(raw_refs or refs)} references")
    tok = sacrebleu.metrics.BLEU(tokenize="none", force=True)
    tok_score = tok.corpus_score(hyps, [refs])
    detok_h = detokenize(hyps, lang)
    detok_r = raw_refs if raw_refs is not None else detokenize(refs, lang)
    sb = sacrebleu.metrics.BLEU()
    sb_score = sb.corpus_score(detok_h, [detok_r])
    return BleuReport(len(hyps), round(tok_score.score, 2), str(tok.get_signature()),
                      round(sb_score.score, 2), str(sb.get_signature()))


def score_generate_file(path: str | Path, lang: str = "en", raw_ref: Optional[str | Path] = None) -> BleuReport:
    p = Path(path)
    if not p.is_file():
        raise FairseqNasError(f"{p}: no such file (expected fairseq-generate output)")
    hyps, refs = parse_generate_output(p.read_text(), str(p))
    raw = None
    if raw_ref is not None:
        rp = Path(raw_ref)
        if not rp.is_file():
            raise FairseqNasError(f"{rp}: no such reference file")
        raw_all = rp.read_text().splitlines()
        raw = raw_all[: len(hyps)] if len(raw_all) >= len(hyps) else None
        if raw is None:
            raise FairseqNasError(f"{rp}: {len(raw_all)} lines, fewer than the {len(hyps)} hypotheses")
    return score(hyps, refs, lang, raw)


def write_report(report: BleuReport, path: str | Path) -> None:
    """Write the scores as JSON, atomically."""
    atomic_write_text(path, json.dumps(report.to_dict(), indent=2) + "\n")
