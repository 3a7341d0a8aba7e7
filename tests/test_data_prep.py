"""Tests of data-prep/: the synthetic demo corpus, prepare-demo.sh and prepare-parallel.sh."""

from __future__ import annotations

import collections
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_PREP = ROOT / "data-prep"
SPLITS = ("train", "valid", "test")
TINY = {"train": 300, "valid": 30, "test": 30}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, DATA_PREP / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gen = _load("make_demo_corpus")
pipeline = _load("text_pipeline")
LEX = gen.Lexicon()


def _env():
    env = dict(os.environ)
    env.setdefault("PYTHON", sys.executable)
    return env


def _run(script: str, *args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", str(DATA_PREP / script), *map(str, args)], capture_output=True, text=True,
                          env=_env(), cwd=ROOT, timeout=120)
    if check:
        assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


# ---------------------------------------------------------------------------
# An independent parser of the source language and transducer to the target,
# written from the grammar in make_demo_corpus's docstring and the lexicon tables only.


def _cat(tok):
    return LEX.src_info[tok][0]


def _parse_np(toks, i):
    assert _cat(toks[i]) == "det", (toks, i)
    np = {"det": LEX.src_info[toks[i]][2]["def"], "adjs": []}
    i += 1
    while _cat(toks[i]) == "adj":
        np["adjs"].append(LEX.src_info[toks[i]][1])
        i += 1
    assert _cat(toks[i]) == "noun", (toks, i)
    _, np["noun"], feats = LEX.src_info[toks[i]]
    np["num"] = feats["num"]
    return np, i + 1


def _parse_verb(toks, i):
    neg = toks[i] == gen.SRC_NEG
    i += neg
    assert _cat(toks[i]) == "verb", (toks, i)
    return neg, LEX.src_info[toks[i]][1], LEX.src_info[toks[i]][2]["trans"], i + 1


def _parse_clause(toks):
    """-> dict(subj, mods, neg, verb, obj, obj_pp, adv); the whole clause must be consumed."""
    c = {"mods": [], "obj": None, "obj_pp": None, "adv": None}
    c["subj"], i = _parse_np(toks, 0)
    while _cat(toks[i]) == "prep":
        prep = LEX.src_info[toks[i]][1]
        inner, i = _parse_np(toks, i + 1)
        c["mods"].append(("pp", prep, inner))
    if _cat(toks[i]) == "rel":
        if _cat(toks[i + 1]) in ("neg", "verb"):  # subject relative: rel (neg) verb np
            neg, verb, _, i = _parse_verb(toks, i + 1)
            inner, i = _parse_np(toks, i)
            c["mods"].append(("rc_subj", neg, verb, inner))
        else:  # object relative: rel np (neg) verb
            inner, i = _parse_np(toks, i + 1)
            neg, verb, _, i = _parse_verb(toks, i)
            c["mods"].append(("rc_obj", neg, verb, inner))
    c["neg"], c["verb"], trans, i = _parse_verb(toks, i)
    if trans:
        c["obj"], i = _parse_np(toks, i)
        if i < len(toks) and _cat(toks[i]) == "prep":
            prep = LEX.src_info[toks[i]][1]
            inner, i = _parse_np(toks, i + 1)
            c["obj_pp"] = (prep, inner)
    if i < len(toks) and _cat(toks[i]) == "adv":
        c["adv"] = LEX.src_info[toks[i]][1]
        i += 1
    assert i == len(toks), f"unparsed rest {toks[i:]} in {toks}"
    return c


TGT_FORM = {}
for _tok, (_c, _lemma, _f) in LEX.tgt_info.items():
    TGT_FORM[_c, _lemma, _f.get("num"), _f.get("def")] = _tok


def _t(cat, lemma, num=None, definite=None):
    return TGT_FORM[cat, lemma, num, definite]


def _det_lemma(definite):
    return LEX.src_info[gen.SRC_DET[definite]][1]


def _expected_np(np):
    """det agrees with the noun; the adjectives follow the noun in mirror order."""
    return ([_t("det", _det_lemma(np["det"]), np["num"], np["det"]), _t("noun", np["noun"], np["num"])]
            + [_t("adj", a) for a in reversed(np["adjs"])])


def _expected_clause(c):
    out = _expected_np(c["subj"])
    head = c["subj"]["num"]
    rel = LEX.src_info[gen.SRC_REL][1]
    neg = LEX.src_info[gen.SRC_NEG][1]
    for mod in c["mods"]:
        if mod[0] == "pp":
            out += [_t("prep", mod[1])] + _expected_np(mod[2])
        else:
            kind, is_neg, verb, inner = mod
            agr = head if kind == "rc_subj" else inner["num"]
            out += [_t("rel", rel, head)] + _expected_np(inner)
            out += [_t("neg", neg)] * is_neg + [_t("verb", verb, agr)]
    if c["obj"] is not None:
        out += _expected_np(c["obj"])
        if c["obj_pp"]:
            out += [_t("prep", c["obj_pp"][0])] + _expected_np(c["obj_pp"][1])
    if c["adv"] is not None:
        out.append(_t("adv", c["adv"]))
    # verb-final, agreeing with the subject
    return out + [_t("neg", neg)] * c["neg"] + [_t("verb", c["verb"], head)]


def _clauses(tokens, conj_words):
    assert tokens[-1] == gen.PUNCT
    parts, cur = [], []
    for tok in tokens[:-1]:
        if tok in conj_words:
            parts.append(cur)
            cur = []
        else:
            cur.append(tok)
    return parts + [cur]


# ---------------------------------------------------------------------------
# generator


def test_generator_is_deterministic(tmp_path):
    sizes = {"train": 200, "valid": 20, "test": 20}
    a, b, c = (tmp_path / x for x in "abc")
    gen.write_corpus(str(a), sizes, seed=3)
    gen.write_corpus(str(b), sizes, seed=3)
    gen.write_corpus(str(c), sizes, seed=4)
    for split in SPLITS:
        for lang in ("src", "tgt"):
            name = f"{split}.{lang}"
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
            assert (a / name).read_bytes() != (c / name).read_bytes(), name
            assert len(_lines(a / name)) == sizes[split]
    assert not list(a.glob("*.tmp"))


def test_generator_cli_line_counts_and_lengths(tmp_path):
    proc = subprocess.run([sys.executable, str(DATA_PREP / "make_demo_corpus.py"), "--out", str(tmp_path),
                           "--train", "500", "--valid", "40", "--test", "50", "--seed", "7"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    counts = {"train": 500, "valid": 40, "test": 50}
    for split, n in counts.items():
        src, tgt = _lines(tmp_path / f"{split}.src"), _lines(tmp_path / f"{split}.tgt")
        assert len(src) == len(tgt) == n
        for s, t in zip(src, tgt):
            assert len(s.split()) == len(t.split()), (s, t)  # word-by-word translation
            assert gen.MIN_LEN <= len(s.split()) <= gen.MAX_LEN
            assert s == " ".join(s.split())  # single spaces, no stray whitespace
    lengths = [len(s.split()) for s in _lines(tmp_path / "train.src")]
    assert min(lengths) <= 6 and max(lengths) >= 25  # short and long sentences both occur
    # held-out sources never repeat an earlier split's
    train = set(_lines(tmp_path / "train.src"))
    valid = set(_lines(tmp_path / "valid.src"))
    assert not valid & train and not set(_lines(tmp_path / "test.src")) & (train | valid)

    bad = subprocess.run([sys.executable, str(DATA_PREP / "make_demo_corpus.py"),
                          "--out", str(tmp_path / "x"), "--train", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "positive integer" in bad.stderr


def test_lexicon_sizes_and_disjoint_sides():
    assert 200 <= len(LEX.src_info) <= 400 and 200 <= len(LEX.tgt_info) <= 400
    assert set(LEX.src_info) & set(LEX.tgt_info) == {gen.PUNCT}


def test_generated_pairs_follow_the_grammar():
    """Every target is the transduction of the parsed source: mirror-ordered adjectives after the
    noun, verb-final clauses, the main verb agreeing with the (distant) subject, etc."""
    pairs = gen.generate({"train": 1500}, seed=11)["train"]
    stats = collections.Counter()
    distances = []
    for src, tgt in pairs:
        s_clauses = _clauses(src.split(), set(gen.SRC_CONJ))
        t_clauses = _clauses(tgt.split(), set(gen.TGT_CONJ))
        assert len(s_clauses) == len(t_clauses)
        expected = []
        for k, (s, t) in enumerate(zip(s_clauses, t_clauses)):
            c = _parse_clause(s)
            want = _expected_clause(c)
            assert t == want, f"\nsrc: {src}\ntgt: {tgt}\nexpected clause {k}: {' '.join(want)}"
            expected += want
            # long-distance agreement: the clause-final verb agrees with the subject ...
            assert LEX.tgt_info[t[-1]][2]["num"] == c["subj"]["num"]
            nouns = [i for i, tok in enumerate(t) if LEX.tgt_info[tok][0] == "noun"]
            distances.append(len(t) - 1 - nouns[0])
            # ... even when the noun closest to the verb has the other number (an attractor)
            stats["attractor"] += LEX.tgt_info[t[nouns[-1]]][2]["num"] != c["subj"]["num"]
            stats["clauses"] += 1
            stats["two_adjs"] += len(c["subj"]["adjs"]) == 2
            for mod in c["mods"]:
                stats[mod[0]] += 1
        assert len(src.split()) == len(tgt.split())
    # the structures that make the architecture matter all occur, with long and short dependencies
    assert stats["attractor"] >= 0.2 * stats["clauses"], stats
    assert min(stats[k] for k in ("pp", "rc_subj", "rc_obj", "two_adjs")) >= 50, stats
    assert min(distances) <= 2 and max(distances) >= 15, (min(distances), max(distances))


def test_grammar_check_detects_broken_agreement():
    """The checker above is not vacuous: a target with a wrongly inflected main verb is rejected."""
    src, tgt = gen.generate({"train": 1}, seed=5)["train"][0]
    toks = tgt.split()
    _cat_, lemma, feats = LEX.tgt_info[toks[-2]]
    other = "pl" if feats["num"] == "sg" else "sg"
    toks[-2] = _t("verb", lemma, other)
    c = _parse_clause(_clauses(src.split(), set(gen.SRC_CONJ))[-1])
    assert _clauses(toks, set(gen.TGT_CONJ))[-1] != _expected_clause(c)


def test_text_pipeline_keeps_lines(tmp_path):
    raw = tmp_path / "in.de"
    # \r, U+2028 and NBSP must not split lines nor survive as odd whitespace
    raw.write_bytes("Hallo,  Welt!\r\nDas ist\u2028ein Test\u00a0(1).\n\nEnde\n".encode())
    out = tmp_path / "out.de"
    assert pipeline.main(["tokenize", "--lang", "de", "--moses", "--lowercase", str(raw), str(out)]) == 0
    assert _lines(out) == ["hallo , welt !", "das ist ein test ( 1 ) .", "", "ende"]


# ---------------------------------------------------------------------------
# prepare-demo.sh


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "corpus"
    proc = _run("prepare-demo.sh", out, "--train", TINY["train"], "--valid", TINY["valid"],
                "--test", TINY["test"], "--seed", 2)
    return out, proc


def _check_data_bin(bin_dir: Path, src: str, tgt: str, counts: dict[str, int], raw_dir: Path | None = None):
    from fairseq.data import Dictionary, data_utils

    d_src = Dictionary.load(str(bin_dir / f"dict.{src}.txt"))
    d_tgt = Dictionary.load(str(bin_dir / f"dict.{tgt}.txt"))
    for split, n in counts.items():
        for lang, d in ((src, d_src), (tgt, d_tgt)):
            prefix = bin_dir / f"{split}.{src}-{tgt}.{lang}"
            assert Path(f"{prefix}.bin").is_file() and Path(f"{prefix}.idx").is_file()
            ds = data_utils.load_indexed_dataset(str(prefix), d)
            assert ds is not None and len(ds) == n, (split, lang)
            if raw_dir is not None:  # the binarized ids decode back to the text
                first = _lines(raw_dir / f"{split}.{lang}")[0]
                assert d.string(ds[0]) == first
    return d_src, d_tgt


def test_prepare_demo_builds_loadable_data_bin(demo):
    out, proc = demo
    for split in SPLITS:
        for lang in ("src", "tgt"):
            assert len(_lines(out / "raw" / f"{split}.{lang}")) == TINY[split]
    d_src, d_tgt = _check_data_bin(out / "data-bin", "src", "tgt", TINY, raw_dir=out / "raw")
    assert len(d_src) == len(d_tgt)  # joined dictionary
    assert (out / "data-bin" / "dict.src.txt").read_text() == (out / "data-bin" / "dict.tgt.txt").read_text()
    assert 200 < len(d_src) < 700
    assert f"train {TINY['train']}, valid {TINY['valid']}, test {TINY['test']}" in proc.stdout
    assert "data-bin:" in proc.stdout
    # same as the generator called directly with that seed
    assert _lines(out / "raw" / "train.src")[0] == gen.generate({"train": 1}, seed=2)["train"][0][0]


def test_prepare_demo_rerun_is_skipped_and_new_args_regenerate(demo):
    out, _ = demo
    bin_dir = out / "data-bin"
    watched = [out / "raw" / "train.src", bin_dir / "train.src-tgt.src.bin", bin_dir / "dict.src.txt"]
    before = [p.stat().st_mtime_ns for p in watched]
    proc = _run("prepare-demo.sh", out, "--train", TINY["train"], "--valid", TINY["valid"],
                "--test", TINY["test"], "--seed", 2)
    assert "up to date" in proc.stdout and "binarizing" not in proc.stdout
    assert [p.stat().st_mtime_ns for p in watched] == before

    # different arguments regenerate (in a copy, so that the fixture stays as it was)
    other = out.parent / "other"
    shutil.copytree(out, other)
    proc = _run("prepare-demo.sh", other, "--train", 100, "--valid", 10, "--test", 10, "--seed", 2)
    assert "up to date" not in proc.stdout and "binarizing" in proc.stdout
    assert _lines(other / "raw" / "train.src") == _lines(out / "raw" / "train.src")[:100]
    _check_data_bin(other / "data-bin", "src", "tgt", {"train": 100, "valid": 10, "test": 10})


@pytest.mark.parametrize("args", [
    ["--train", "abc"], ["--train", "0"], ["--valid", "-5"], ["--test", "1.5"], ["--seed", "x"],
    ["--bogus"], ["--train"],
])
def test_prepare_demo_rejects_bad_input(tmp_path, args):
    out = tmp_path / "never"
    proc = _run("prepare-demo.sh", out, *args, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prepare-demo.sh: error: "), proc.stderr
    assert not out.exists()  # no work was done


def test_prepare_demo_help():
    proc = _run("prepare-demo.sh", "--help")
    assert "usage:" in proc.stdout and "--train" in proc.stdout


# ---------------------------------------------------------------------------
# prepare-parallel.sh


def test_prepare_parallel_with_bpe(demo, tmp_path):
    raw = demo[0] / "raw"
    out = tmp_path / "par"
    args = ["--src", "src", "--tgt", "tgt", "--train", raw / "train", "--valid", raw / "valid",
            "--test", raw / "test", "--out", out, "--tokenize", "none", "--bpe-size", 120, "--workers", 1]
    proc = _run("prepare-parallel.sh", *args)
    assert (out / "bpe" / "spm.model").is_file()
    d_src, d_tgt = _check_data_bin(out / "data-bin", "src", "tgt", TINY, raw_dir=out / "bpe")
    assert len(d_src) == len(d_tgt) <= 120 + 4  # joint BPE, joined dictionary
    assert "pairs:    train 300, valid 30, test 30" in proc.stdout
    # the pieces are sub-words with sentencepiece's word markers and decode back to the input
    from fairseq.data import data_utils

    bpe_line = _lines(out / "bpe" / "valid.tgt")[0]
    assert "\u2581" in bpe_line and len(bpe_line.split()) > len(_lines(raw / "valid.tgt")[0].split())
    assert data_utils.post_process(bpe_line, "sentencepiece") == _lines(raw / "valid.tgt")[0]

    watched = out / "data-bin" / "train.src-tgt.tgt.bin"
    before = watched.stat().st_mtime_ns
    again = _run("prepare-parallel.sh", *args)
    assert again.stdout.count("up to date") == 3 and watched.stat().st_mtime_ns == before


def test_prepare_parallel_rejects_unequal_line_counts(demo, tmp_path):
    raw = demo[0] / "raw"
    short = tmp_path / "short"
    (tmp_path / "short.src").write_text((raw / "valid.src").read_text())
    (tmp_path / "short.tgt").write_text("\n".join(_lines(raw / "valid.tgt")[:-3]) + "\n")
    out = tmp_path / "never"
    proc = _run("prepare-parallel.sh", "--src", "src", "--tgt", "tgt", "--train", raw / "train",
                "--valid", short, "--out", out, "--tokenize", "none", "--bpe-size", 0, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prepare-parallel.sh: error: "), proc.stderr
    assert str(tmp_path / "short.tgt") in lines[0] and "27" in lines[0]
    assert not out.exists()
