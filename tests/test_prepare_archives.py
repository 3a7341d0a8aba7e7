"""prepare-iwslt14.sh and prepare-wmt14.sh on MINIATURE archives with the real layouts.

The archives hold tiny invented sentences (the demo corpus generator's two made-up
languages, dressed with capitals, punctuation and the IWSLT/WMT file formats); no real
corpus text.  Each script must turn them into a data-bin that fairseq reads."""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from helpers import REPO, env, run_cli, train_losses

DATA_PREP = REPO / "data-prep"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, DATA_PREP / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gen = _load("make_demo_corpus")
tools = _load("corpus_tools")


def _run(script: str, *args, check=True) -> subprocess.CompletedProcess:
    e = env()
    e.setdefault("PYTHON", sys.executable)
    e["no_proxy"] = e["NO_PROXY"] = "127.0.0.1,localhost"
    proc = subprocess.run(["bash", str(DATA_PREP / script), *map(str, args)], capture_output=True, text=True,
                          env=e, cwd=REPO, timeout=240)
    if check:
        assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def _one_line_error(proc, prog: str) -> str:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), proc.stderr
    return lines[0]


def _tgz(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _raw(tokens: str) -> str:
    """An invented tokenized sentence as raw text: a capital, the final '.' attached."""
    words = tokens.split()
    text = " ".join(words[:-1]) + words[-1] if words[-1] == "." else " ".join(words)
    return text[0].upper() + text[1:]


def _expected(tokens: str) -> str:
    """What Moses tokenization + lowercasing gives back for _raw(tokens)."""
    return tokens.lower()


def _sentences(n: int, seed: int) -> list[tuple[str, str]]:
    """(de-like, en-like) tokenized invented pairs: the demo corpus' tgt and src."""
    return [(t, s) for s, t in gen.generate({"train": n}, seed=seed)["train"]]


def _data_bin_counts(bin_dir: Path, src: str, tgt: str) -> dict[str, int]:
    from fairseq.data import Dictionary, data_utils

    d = Dictionary.load(str(bin_dir / f"dict.{src}.txt"))
    assert (bin_dir / f"dict.{src}.txt").read_text() == (bin_dir / f"dict.{tgt}.txt").read_text()  # joined
    counts = {}
    for split in ("train", "valid", "test"):
        n = {len(data_utils.load_indexed_dataset(str(bin_dir / f"{split}.{src}-{tgt}.{lang}"), d))
             for lang in (src, tgt)}
        assert len(n) == 1, (split, n)
        counts[split] = n.pop()
    return counts


# ---------------------------------------------------------------------------
# IWSLT'14: de-en.tgz with train.tags (talk headers between the sentences) and xml dev/test sets

TALKS = 12
PER_TALK = 40
HEADER_DROPPED = 3   # <url>, <keywords>, <talkid>: dropped by the classic rules
HEADER_KEPT = 4      # <title>, <description> (tags stripped) and <speaker>, <reviewer> (kept whole)
SETS = ["TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012"]
SEGS = 6


def _train_tags(pairs, side: int) -> str:
    out, it = [], iter(pairs)
    for talk in range(TALKS):
        title, desc = next(it), next(it)
        speaker = f"Zorbo Quellin{talk}"
        out += [f"<url>http://www.example.org/talks/{talk}.html</url>", f"<keywords>talks, invented{talk}</keywords>",
                f"<speaker>{speaker}</speaker>", f"<talkid>{talk}</talkid>", f"<title>{_raw(title[side])}</title>",
                f"<description>{_raw(desc[side])}</description>", f"<reviewer>{speaker}</reviewer>"]
        for _ in range(PER_TALK):
            out.append(_raw(next(it)[side]))
    # sentences the length filter drops: too long, length ratio > 1.5, one side empty
    long = " ".join(["zorb"] * 180) + "."
    out += [long, ["Ek zorb.", "Ek zorb quell bofa sil tam rek."][side], ["", "Ek zorb."][side]]
    return "\n".join(out) + "\n"


def _xml(segs: list[str], lang: str, name: str) -> str:
    body = "\n".join(f'<seg id="{i + 1}"> {s} </seg>' for i, s in enumerate(segs))
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<mteval>\n<{"srcset" if lang == "de" else "refset"} '
            f'setid="iwslt2014_{name}" srclang="german">\n<doc docid="7" genre="lectures">\n'
            f"<url>http://www.example.org/talks/7.html</url>\n<talkid>7</talkid>\n<title>Invented</title>\n"
            f"{body}\n</doc>\n</srcset>\n</mteval>\n")


def _iwslt_archive(root: Path):
    train = _sentences(TALKS * (PER_TALK + 2), seed=21)
    test = _sentences(len(SETS) * SEGS, seed=22)
    files = {f"de-en/train.tags.de-en.{lang}": _train_tags(train, side) for side, lang in enumerate(("de", "en"))}
    for k, name in enumerate(SETS):
        chunk = test[k * SEGS:(k + 1) * SEGS]
        for side, lang in enumerate(("de", "en")):
            segs = [_raw(p[side]) for p in chunk]
            if k == 0 and lang == "en":
                segs[0] = segs[0][:-1] + "\u2019s end."  # a typographic apostrophe, replaced by "'"
            files[f"de-en/IWSLT14.{name}.de-en.{lang}.xml"] = _xml(segs, lang, name)
    files["de-en/README"] = "invented miniature of the IWSLT'14 layout\n"
    return _tgz(root / "de-en.tgz", files), train, test


def test_iwslt14_builds_the_classic_split_a_loadable_data_bin_and_reruns(tmp_path):
    """One test (the script runs once): the split, the text, the data-bin, then reruns."""
    archive, train, test = _iwslt_archive(tmp_path)
    out = tmp_path / "out"
    proc = _run("prepare-iwslt14.sh", "--archive", archive, "--out", out, "--bpe-size", 200, "--workers", 1)
    kept = TALKS * (PER_TALK + HEADER_KEPT)  # the 3 bait pairs are dropped by the length filter
    valid = kept // 23
    counts = _data_bin_counts(out / "data-bin", "de", "en")
    assert counts == {"train": kept - valid, "valid": valid, "test": len(SETS) * SEGS}
    assert f"split:      train {kept - valid}, valid {valid}, test {len(SETS) * SEGS} pairs" in proc.stdout

    text = out / "text"
    # every 23rd kept pair is valid (awk 'NR % 23 == 0'), in order
    de_lines = _lines(text / "train.de")
    assert _lines(text / "valid.de")[0] not in de_lines[:22]
    # tokenized, lowercased; header lines: <url>/<talkid>/<keywords> gone, title text kept without tags
    # kept header lines of the first talk: <speaker> line, title text, description text, <reviewer> line
    assert de_lines[1:3] == [_expected(train[0][0]), _expected(train[1][0])]  # tags stripped
    assert de_lines[4:9] == [_expected(p[0]) for p in train[2:7]]
    assert not any("http" in line or "talkid" in line or "invented" in line for line in de_lines)
    assert not any("title" in line or "description" in line for line in de_lines)
    assert not any(any(c.isupper() for c in line) for line in de_lines)
    stats = json.loads((text / "stats.json").read_text())
    assert stats["tags"] == {"kept": TALKS * (PER_TALK + HEADER_KEPT) + 3, "dropped": TALKS * HEADER_DROPPED,
                             "tag_like": TALKS * 2}
    assert stats["filter"]["too_long"] == 1 and stats["filter"]["ratio"] == 1 and stats["filter"]["empty"] == 1
    assert "still start with '<'" in proc.stdout
    # test = the xml <seg> texts of the five sets in the classic order, tokenized and lowercased
    test_en = _lines(text / "test.en")
    assert test_en[0].endswith("' s end .") or test_en[0].endswith("'s end .")
    assert "\u2019" not in "".join(test_en)
    assert test_en[1:SEGS] == [_expected(p[1]) for p in test[1:SEGS]]
    assert _lines(text / "test.de") == [_expected(p[0]) for p in test]
    # checksum recorded; BPE model; summary
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert (out / "archive.sha256").read_text() == f"{digest}  de-en.tgz\n"
    assert (out / "bpe" / "spm.model").is_file()
    assert "data-bin:" in proc.stdout

    # a rerun skips every step; the checksum is checked against --sha256 and the record
    watched = [out / "text" / "train.de", out / "data-bin" / "train.de-en.de.bin"]
    before = [p.stat().st_mtime_ns for p in watched]
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    again = _run("prepare-iwslt14.sh", "--archive", archive, "--out", out, "--bpe-size", 200, "--workers", 1,
                 "--sha256", digest.upper())
    assert "matches --sha256" in again.stdout
    assert again.stdout.count("up to date") >= 4 and "extracting" not in again.stdout
    assert [p.stat().st_mtime_ns for p in watched] == before
    bad = _run("prepare-iwslt14.sh", "--archive", archive, "--out", out, "--sha256", "0" * 64, check=False)
    assert "expected " + "0" * 64 in _one_line_error(bad, "prepare-iwslt14.sh")

    # another archive (one byte changed) for the same DIR is refused, naming the record; --force accepts it
    other = tmp_path / "other" / "de-en.tgz"
    other.parent.mkdir()
    data = archive.read_bytes()
    other.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    record = str(out / "archive.sha256")
    assert tools.main(["checksum", "--record", record, str(other)]) == 1
    assert tools.main(["checksum", "--record", record, "--force", str(other)]) == 0
    assert (out / "archive.sha256").read_text() == f"{hashlib.sha256(other.read_bytes()).hexdigest()}  de-en.tgz\n"


def test_tags_modes_and_segs(tmp_path):
    """--tags all drops every header line (title and description too); the classic rules keep
    the title/description text and whatever other tag lines the file has."""
    train = _sentences(TALKS * (PER_TALK + 2), seed=21)
    for side, lang in enumerate(("de", "en")):
        (tmp_path / f"tags.{lang}").write_text(_train_tags(train, side), encoding="utf-8")
    args = [str(tmp_path / "tags.de"), str(tmp_path / "tags.en"), str(tmp_path / "t.de"), str(tmp_path / "t.en")]
    assert tools.main(["train-tags", "--mode", "all", *args]) == 0
    de = _lines(tmp_path / "t.de")
    assert len(de) == TALKS * PER_TALK + 3 and not any(line.startswith("<") for line in de)
    assert de[:5] == [_raw(p[0]) for p in train[2:7]]
    assert tools.clean_tag_line("<title>Ab: cd</title>", "classic") == "Ab: cd"
    assert tools.clean_tag_line("  <title>Ab: cd</title>", "all") is None
    assert tools.clean_tag_line("x <url>y</url>", "classic") is None
    assert tools.clean_tag_line("a < b", "all") == "a < b"
    assert tools.main(["train-tags", "--mode", "classic", *args]) == 0
    assert len(_lines(tmp_path / "t.de")) == TALKS * (PER_TALK + HEADER_KEPT) + 3
    # <seg> texts of an xml file, in order; a file without any is an error
    (tmp_path / "s.xml").write_text(_xml(["Ab cd.", "Ef\u2019s gh."], "en", "tst2011"), encoding="utf-8")
    assert tools.main(["segs", str(tmp_path / "s.xml"), str(tmp_path / "s.en")]) == 0
    assert _lines(tmp_path / "s.en") == ["Ab cd.", "Ef's gh."]
    (tmp_path / "empty.xml").write_text("<doc>\n</doc>\n")
    assert tools.main(["segs", str(tmp_path / "empty.xml"), str(tmp_path / "e.en")]) == 1
    assert not (tmp_path / "e.en").exists()


@pytest.mark.parametrize("case", ["no-out", "missing", "not-gzip", "wrong-layout", "bad-sha", "bad-bpe", "bad-tags",
                                  "bad-set", "unknown"])
def test_iwslt14_bad_input_is_one_line_error_before_any_work(tmp_path, case):
    members = ["de-en/train.tags.de-en.de", "de-en/train.tags.de-en.en"] + [
        f"de-en/IWSLT14.{name}.de-en.{lang}.xml" for name in SETS for lang in ("de", "en")]
    root = tmp_path / "ok"
    root.mkdir()
    _tgz(root / "de-en.tgz", {m: "x\n" for m in members})
    out = tmp_path / "never"
    notgz = tmp_path / "x.tgz"
    notgz.write_text("plain text\n")
    layout = _tgz(tmp_path / "layout.tgz", {"de-en/train.tags.de-en.de": "a\n", "de-en/train.tags.de-en.en": "b\n"})
    args = {"no-out": ["--archive", root / "de-en.tgz"],
            "missing": ["--archive", tmp_path / "nope.tgz", "--out", out],
            "not-gzip": ["--archive", notgz, "--out", out],
            "wrong-layout": ["--archive", layout, "--out", out],
            "bad-sha": ["--archive", root / "de-en.tgz", "--out", out, "--sha256", "abc"],
            "bad-bpe": ["--archive", root / "de-en.tgz", "--out", out, "--bpe-size", "x"],
            "bad-tags": ["--archive", root / "de-en.tgz", "--out", out, "--tags", "some"],
            "bad-set": ["--archive", root / "de-en.tgz", "--out", out, "--test-sets", "tst2010"],
            "unknown": ["--archive", root / "de-en.tgz", "--out", out, "--bogus"]}[case]
    msg = _one_line_error(_run("prepare-iwslt14.sh", *args, check=False), "prepare-iwslt14.sh")
    if case == "wrong-layout":
        assert "IWSLT14.TED.dev2010.de-en.de.xml" in msg
    assert not out.exists()


def test_iwslt14_without_archive_or_network_fails_in_one_line(tmp_path):
    out = tmp_path / "dl"
    proc = _run("prepare-iwslt14.sh", "--out", out, "--url", "http://127.0.0.1:9/de-en.tgz", check=False)
    msg = _one_line_error(proc, "prepare-iwslt14.sh")
    assert "could not download" in msg and "--archive" in msg
    assert not (out / "orig" / "de-en.tgz").exists() and not list((out / "orig").glob("*.part"))


def test_help():
    for script in ("prepare-iwslt14.sh", "prepare-wmt14.sh"):
        proc = _run(script, "--help")
        assert proc.stdout.startswith("usage:") and "--out" in proc.stdout and "sha256" in proc.stdout


# ---------------------------------------------------------------------------
# WMT'14: five archives with the real member names

def _sgm(segs: list[str], kind: str, lang: str) -> str:
    body = "\n".join(f'<seg id="{i + 1}">{s}</seg>' for i, s in enumerate(segs))
    return (f'<{kind}set setid="newstest" srclang="any" trglang="{lang}">\n<doc sysid="ref" docid="invented" '
            f'genre="news" origlang="en">\n<p>\n{body}\n</p>\n</doc>\n</{kind}set>\n')


def _wmt_archives(root: Path):
    arch = root / "archives"
    arch.mkdir()
    pairs = _sentences(400, seed=31)
    corpora = {"training-parallel-europarl-v7.tgz": ("training/europarl-v7.de-en", pairs[:150]),
               "training-parallel-commoncrawl.tgz": ("commoncrawl.de-en", pairs[150:300]),
               "training-parallel-nc-v9.tgz": ("training/news-commentary-v9.de-en", pairs[300:])}
    for name, (stem, chunk) in corpora.items():
        de = [_raw(p[0]) for p in chunk]
        en = [_raw(p[1]) for p in chunk]
        if name.endswith("nc-v9.tgz"):
            en[0] = "Zorb-quell\u200btam bofa."        # hyphen split (-a); a zero-width space removed
            de[0] = "Zorb quell tam bofa."
            en[1], de[1] = " ".join(["tam"] * 260) + ".", " ".join(["tam"] * 260) + "."  # too long
        files = {f"{stem}.de": "\n".join(de) + "\n", f"{stem}.en": "\n".join(en) + "\n"}
        if "europarl" in name:
            files["training/europarl-v7.fr-en.fr"] = "Zut.\n"
        if "commoncrawl" in name:
            files["commoncrawl.de-en.annotation"] = "x\n" * len(chunk)
        _tgz(arch / name, files)
    dev, test = _sentences(20, seed=32), _sentences(25, seed=33)
    _tgz(arch / "dev.tgz", {
        "dev/newstest2013-src.en.sgm": _sgm([_raw(p[1]) for p in dev], "src", "en"),
        "dev/newstest2013-src.de.sgm": _sgm([_raw(p[0]) for p in dev], "src", "de"),
        "dev/newstest2012-src.en.sgm": _sgm(["Other."], "src", "en"),
        "dev/newstest2013.en": "\n".join(_raw(p[1]) for p in dev) + "\n"})
    _tgz(arch / "test-full.tgz", {
        "test-full/newstest2014-deen-src.en.sgm": _sgm([_raw(p[1]) for p in test], "src", "en"),
        "test-full/newstest2014-deen-ref.de.sgm": _sgm([_raw(p[0]) for p in test], "ref", "de"),
        "test-full/newstest2014-deen-src.de.sgm": _sgm([_raw(p[0]) for p in test], "src", "de"),
        "test-full/newstest2014-deen-ref.en.sgm": _sgm([_raw(p[1]) for p in test], "ref", "en")})
    return arch, pairs, dev, test


def test_wmt14_builds_a_data_bin_that_fairseq_train_reads_and_reruns(tmp_path):
    """One test (the script runs once): the text, the data-bin, 2 updates of fairseq-train, a rerun."""
    arch, pairs, dev, test = _wmt_archives(tmp_path)
    out = tmp_path / "out"
    proc = _run("prepare-wmt14.sh", "--archives", arch, "--out", out, "--bpe-size", 220, "--sample-train", 300,
                "--workers", 1)
    assert _data_bin_counts(out / "data-bin", "en", "de") == {"train": 300, "valid": 20, "test": 25}
    stats = json.loads((out / "text" / "stats.json").read_text())["filter"]
    assert stats["input"] == 400 and stats["too_long"] == 1 and stats["kept"] == 399 and stats["train"] == 300
    text = out / "text"
    train_en = _lines(text / "train.en")
    order = {p[1][0].upper() + p[1][1:]: i for i, p in enumerate(pairs)}  # case kept (WMT is case-sensitive)
    idx = [order[line] for line in train_en if line in order]
    assert len(idx) >= 299 and idx == sorted(idx)  # a sample, in corpus order
    assert all(line.endswith(" .") for line in train_en)  # tokenized
    assert _lines(text / "valid.en") == [p[1][0].upper() + p[1][1:] for p in dev]
    assert _lines(text / "test.de") == [p[0][0].upper() + p[0][1:] for p in test]
    assert len((out / "archives.sha256").read_text().splitlines()) == 5
    assert "valid 20 (newstest2013), test 25 (newstest2014) pairs" in proc.stdout

    # fairseq-train reads it: 2 updates of a tiny standard transformer
    train = run_cli("fairseq_cli.train", [
        str(out / "data-bin"), "--arch", "transformer", "--share-all-embeddings", "--encoder-layers", "1",
        "--decoder-layers", "1", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
        "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2",
        "--decoder-attention-heads", "2", "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "400",
        "--criterion", "label_smoothed_cross_entropy", "--max-update", "2", "--no-save", "--num-workers", "0",
        "--no-progress-bar", "--log-format", "json", "--log-interval", "1", "--cpu", "--seed", "1"])
    assert len(train_losses(train.stdout + train.stderr)) == 2

    # a rerun skips every step
    watched = out / "data-bin" / "train.en-de.de.bin"
    before = watched.stat().st_mtime_ns
    again = _run("prepare-wmt14.sh", "--archives", arch, "--out", out, "--bpe-size", 220, "--sample-train", 300,
                 "--workers", 1)
    assert again.stdout.count("up to date") >= 4 and watched.stat().st_mtime_ns == before


def test_wmt14_tokenizer_splits_hyphens_and_drops_non_printing(tmp_path):
    raw = tmp_path / "one.en"
    raw.write_text("Zorb-quell\u200btam bofa.\n", encoding="utf-8")
    assert tools.main(["tokenize", "--lang", "en", "--normalize", "--remove-non-printing", "--aggressive-dash",
                       "--out", str(tmp_path / "one.tok"), str(raw)]) == 0
    assert _lines(tmp_path / "one.tok") == ["Zorb @-@ quell tam bofa ."]


def test_wmt14_bad_input_fails_early(tmp_path):
    arch = tmp_path / "archives"
    arch.mkdir()
    for name in ("training-parallel-europarl-v7.tgz", "training-parallel-commoncrawl.tgz",
                 "training-parallel-nc-v9.tgz"):
        _tgz(arch / name, {"x": "x\n"})
    _tgz(arch / "dev.tgz", {"dev/newstest2013-src.en.sgm": "x\n", "dev/newstest2013-ref.de.sgm": "x\n"})
    _tgz(arch / "test-full.tgz", {"test-full/newstest2014-deen-src.en.sgm": "x\n",
                                  "test-full/newstest2014-deen-ref.de.sgm": "x\n"})
    never = tmp_path / "never"
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "dev.tgz").write_bytes((arch / "dev.tgz").read_bytes())
    for args, needle in [
        (["--archives", partial, "--out", never], "training-parallel-europarl-v7.tgz"),
        (["--archives", arch, "--out", never, "--sample-train", "x"], "--sample-train"),
        (["--archives", arch, "--out", never, "--sha256", "dev.tgz=12"], "--sha256"),
        (["--archives", arch, "--out", never, "--sha256", "other.tgz=" + "0" * 64], "not one of the archives"),
        (["--archives", tmp_path / "nowhere", "--out", never], "not a folder"),
    ]:
        msg = _one_line_error(_run("prepare-wmt14.sh", *args, check=False), "prepare-wmt14.sh")
        assert needle in msg, msg
        assert not never.exists()

    wrong = tmp_path / "wrong"
    proc = _run("prepare-wmt14.sh", "--archives", arch, "--out", wrong, "--sha256",
                "dev.tgz=" + "0" * 64, check=False)
    assert "dev.tgz: sha256 is" in _one_line_error(proc, "prepare-wmt14.sh")


def test_filter_follows_clean_corpus_n(tmp_path):
    (tmp_path / "c.de").write_text("a b c\n\nx\na b c d e\n" + "w " * 9 + "\nq r\n")
    (tmp_path / "c.en").write_text("a b\nk\ny\na\n" + "w " * 9 + "\nq r s\n")
    assert tools.main(["filter", "--src", "de", "--tgt", "en", "--max-len", "8", "--holdout-every", "2",
                       "--holdout", str(tmp_path / "h"), str(tmp_path / "c"), str(tmp_path / "o")]) == 0
    # kept: (a b c | a b) ratio 1.5 ok; (x | y); (q r | q r s) -> the 2nd kept pair is held out
    assert _lines(tmp_path / "o.de") == ["a b c", "q r"]
    assert _lines(tmp_path / "h.en") == ["y"]
