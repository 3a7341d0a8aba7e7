"""Latency protocol, `fairseq-nas latency` (rows, resume after a kill, shards, repeats, errors)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fairseq_nas.cli.main import main
from fairseq_nas.latency.costs import count_flops, count_params
from fairseq_nas.latency.measure import Protocol, measure
from fairseq_nas.latency.stats import noise_report, summarize, trimmed, trimmed_mean
from fairseq_nas.latency.store import LatencyStore, parse_shard, sample_subnets
from fairseq_nas.latency.vocab import data_bin_vocab, dictionary_size
from fairseq_nas.space import Subnet, load_space
from helpers import REPO, env, read_jsonl

# Every operator, both norms, relative positions, at dims that run in milliseconds.
TINY_SPACE = """
name: tiny_latency
encoder:
  layers: [2]
  embed_dim: [16, 32]
  ffn_ratio: [1, 2]
  heads: [2, 4]
  operator: [self_attention, lightweight_conv, dynamic_conv, lsra_lightweight, lsra_dynamic]
  rpr_len: [0, 2]
  norm: [pre, post]
  kernel_size: [3, 5]
decoder:
  layers: [1, 2]
  embed_dim: [16, 32]
  ffn_ratio: [1, 2]
  heads: [2, 4]
  operator: [self_attention, lightweight_conv, dynamic_conv, lsra_lightweight, lsra_dynamic]
  rpr_len: [0, 2]
  norm: [pre, post]
  kernel_size: [3, 5]
  enc_attn_layers: [1, 2]
"""
FAST = ["--runs", "3", "--warmup", "1", "--src-len", "6", "--beam", "2", "--vocab-size", "40"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture
def space_file(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_SPACE)
    return p


def cli(*args: str) -> int:
    return main(["latency", *map(str, args)])


def keys(rows: list[dict]) -> list[tuple[str, int]]:
    return [(Subnet.from_dict(r["subnet"]).to_json(), r["repeat"]) for r in rows]


# --- statistics ----------------------------------------------------------------------------


def test_trimmed_mean_drops_the_fastest_and_slowest_tenth():
    values = [float(v) for v in range(1, 11)] + [1000.0]  # 11 values: 1 dropped at each end
    assert trimmed(values) == [float(v) for v in range(2, 11)]
    assert trimmed_mean(values) == pytest.approx(6.0)
    runs = [10.0] * 240 + [1.0] * 30 + [500.0] * 30  # 300 runs: 30 dropped at each end
    assert trimmed_mean(runs) == 10.0
    assert trimmed_mean([3.0, 1.0, 2.0, 100.0]) == pytest.approx(26.5)  # < 10 runs: nothing dropped
    s = summarize([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 100.0])
    assert s["mean"] == s["trimmed_mean"] == pytest.approx(5.5) and s["median"] == 5.5
    assert s["std"] == pytest.approx(2.2913, abs=1e-4) and s["cv"] == pytest.approx(2.2913 / 5.5, abs=1e-4)
    assert s["min"] == 1.0 and s["max"] == 100.0
    assert (s["q1"], s["q3"], s["iqr"]) == (3.25, 7.75, 4.5)  # numpy's linear interpolation
    with pytest.raises(ValueError):
        trimmed([])


def test_noise_report():
    report = noise_report([[1.0, 2.0, 3.0, 4.0], [1.1, 1.9, 3.3, 4.0]])
    assert report["kendall_tau"]["0-1"] == pytest.approx(1.0)
    assert report["cv"][3] == 0.0 and report["median_cv"] > 0
    swapped = noise_report([[1.0, 2.0, 3.0], [2.0, 1.0, 3.0], [1.0, 2.0, 3.0]])
    assert set(swapped["kendall_tau"]) == {"0-1", "0-2", "1-2"} and swapped["kendall_tau"]["0-2"] == 1.0


# --- the protocol ---------------------------------------------------------------------------


def test_measure_row(space_file):
    space = load_space(space_file)
    subnet = sample_subnets(space, 1, seed=3)[0]
    before = torch.get_num_threads()
    protocol = Protocol(src_len=7, tgt_len=5, beam=3, warmup=1, runs=6, threads=1)
    row = measure(subnet, space, 50, 45, protocol)
    assert torch.get_num_threads() == before
    assert Subnet.from_dict(row["subnet"]) == subnet
    for part in ("encoder_ms", "decoder_ms", "total_ms", "cpu_ms"):
        assert set(row[part]) == {"mean", "trimmed_mean", "median", "std", "cv", "min", "max", "q1", "q3", "iqr"}
        assert 0 < row[part]["min"] <= row[part]["median"] and row[part]["mean"] > 0 and row[part]["std"] >= 0
        assert row[part]["q1"] <= row[part]["median"] <= row[part]["q3"] and row[part]["iqr"] >= 0
    assert (row["latency_stat"], row["latency_clock"]) == ("median", "wall")
    # float32 on the CPU runs the native conv kernels wherever they build
    from fairseq_nas.modules import native
    assert row["conv_kernels"] == ("native" if native.conv_ops() is not None else "pytorch")
    assert row["latency_ms"] == row["total_ms"]["median"]
    assert (row["protocol"], row["decoder_loop"], row["rounds"]) == ("rounds", "generator", 6)
    assert len(row["round_ms"]) == 6
    # each run's total is its encoder + decoder time, so the means add up (a part's mean against the total's
    # median, as this compared before, fails whenever one slow run lifts the mean above the median)
    assert row["encoder_ms"]["mean"] + row["decoder_ms"]["mean"] == pytest.approx(row["total_ms"]["mean"])
    assert row["encoder_ms"]["mean"] < row["total_ms"]["mean"] and row["decoder_ms"]["mean"] < row["total_ms"]["mean"]
    assert row["params"] == count_params(subnet, space, 50, 45)
    assert row["flops"] == count_flops(subnet, space, 7, 5, 45, beam=3)
    assert (row["runs"], row["warmup"], row["src_len"], row["tgt_len"], row["beam"]) == (6, 1, 7, 5, 3)
    assert (row["device"], row["threads"], row["dtype"], row["src_vocab"], row["tgt_vocab"]) == (
        "cpu", 1, "float32", 50, 45)
    assert row["torch"] == torch.__version__ and row["fairseq"]
    json.dumps(row)  # plain JSON values


@pytest.mark.parametrize("loop", ["generator", "bare"])
def test_measure_decodes_exactly_tgt_len_tokens(space_file, monkeypatch, loop):
    """No early stop: every run makes tgt_len decoder calls, whatever the random weights predict."""
    import fairseq_nas.latency.measure as m

    space = load_space(space_file)
    model = m.build_standalone(sample_subnets(space, 1, seed=5)[0], space, 30, 30)
    calls = []
    real_forward = model.decoder.forward
    monkeypatch.setattr(model.decoder, "forward", lambda *a, **k: calls.append(1) or real_forward(*a, **k))
    times = m.time_model(model, Protocol(src_len=4, tgt_len=9, beam=2, warmup=1, runs=2, decoder_loop=loop))
    assert len(times["encoder"]) == len(times["decoder"]) == len(times["cpu"]) == 2
    assert all(e > 0 and d > 0 and c > 0 for e, d, c in zip(times["encoder"], times["decoder"], times["cpu"]))
    assert len(calls) == 3 * 9


# --- the command --------------------------------------------------------------------------


def test_cli_rows_and_summary(space_file, tmp_path, capsys):
    out = tmp_path / "lat.jsonl"
    assert cli("--space", space_file, "-n", 3, "--seed", 1, *FAST, "--out", out) == 0
    rows = read_jsonl(out)
    assert len(rows) == 3 and len(set(keys(rows))) == 3
    assert [r["index"] for r in rows] == [0, 1, 2] and all(r["repeat"] == 0 for r in rows)
    assert all(r["space"] == "tiny_latency" and r["latency_ms"] > 0 for r in rows)
    printed = capsys.readouterr().out
    assert "3 subnets" in printed and "median" in printed and "min" in printed and "max" in printed
    # a second run finds everything done
    assert cli("--space", space_file, "-n", 3, "--seed", 1, *FAST, "--out", out) == 0
    assert len(read_jsonl(out)) == 3
    assert "0 measured now, 3 already there" in capsys.readouterr().out


def test_cli_subnets_file_accepts_subnets_and_rows(space_file, tmp_path):
    space = load_space(space_file)
    a, b = sample_subnets(space, 2, seed=9)
    src = tmp_path / "in.jsonl"
    src.write_text(a.to_json() + "\n\n" + json.dumps({"subnet": b.to_dict(), "latency_ms": 1.0}) + "\n"
                   + a.to_json() + "\n")  # a repeated: measured once
    out = tmp_path / "lat.jsonl"
    assert cli("--space", space_file, "--subnets", src, *FAST, "--out", out) == 0
    assert sorted(keys(read_jsonl(out))) == sorted([(a.to_json(), 0), (b.to_json(), 0)])


def test_cli_subnets_file_may_be_one_pretty_printed_subnet_like_best_json(space_file, tmp_path):
    from fairseq_nas.errors import SpaceError
    from fairseq_nas.latency.store import read_subnets

    space = load_space(space_file)
    a, b = sample_subnets(space, 2, seed=9)
    best = tmp_path / "best.json"
    best.write_text(json.dumps(a.to_dict(), indent=2) + "\n")
    out = tmp_path / "lat.jsonl"
    assert cli("--space", space_file, "--subnets", best, *FAST, "--out", out) == 0
    assert keys(read_jsonl(out)) == [(a.to_json(), 0)]
    many = tmp_path / "many.json"
    many.write_text(json.dumps([a.to_dict(), {"subnet": b.to_dict()}], indent=1))
    assert read_subnets(many, space) == [a, b]
    bad = a.to_dict()
    bad["encoder"]["embed_dim"] = 7
    many.write_text(json.dumps([a.to_dict(), bad], indent=1))
    with pytest.raises(SpaceError, match=r"many\.json\[1\].*embed_dim"):
        read_subnets(many, space)


def test_cli_shards_partition_the_subnets(space_file, tmp_path):
    outs = []
    for i in range(2):
        outs.append(tmp_path / f"lat{i}.jsonl")
        assert cli("--space", space_file, "-n", 5, *FAST, "--shard", f"{i}/2", "--out", outs[-1]) == 0
    shards = [read_jsonl(o) for o in outs]
    assert [r["index"] for r in shards[0]] == [0, 2, 4] and [r["index"] for r in shards[1]] == [1, 3]
    got = sorted(keys(shards[0]) + keys(shards[1]))
    expected = sorted((s.to_json(), 0) for s in sample_subnets(load_space(space_file), 5, 0))
    assert got == expected


def test_cli_repeat_reports_noise(space_file, tmp_path, capsys):
    out = tmp_path / "lat.jsonl"
    assert cli("--space", space_file, "-n", 3, *FAST, "--repeat", 2, "--out", out) == 0
    rows = read_jsonl(out)
    assert [r["repeat"] for r in rows] == [0, 0, 0, 1, 1, 1]  # pass after pass
    assert len(set(keys(rows))) == 6
    printed = capsys.readouterr().out
    assert "median CV" in printed and "Kendall tau" in printed
    noise = json.loads((tmp_path / "lat.noise.json").read_text())
    assert noise["passes"] == 2 and noise["subnets"] == 3 and len(noise["cv"]) == 3
    assert -1 <= noise["kendall_tau"]["0-1"] <= 1 and noise["median_cv"] >= 0


def test_resume_after_kill_block_protocol(space_file, tmp_path):
    """Block protocol: kill the command (SIGKILL) after the second row, damage the last line, resume: every
    subnet once. (The rounds protocol's kill test is in test_latency_rounds.py.)"""
    n = 6
    out = tmp_path / "lat.jsonl"
    block = ["--protocol", "block", "--runs", "25", "--warmup", "1", "--src-len", "8", "--vocab-size", "40"]
    args = [sys.executable, "-m", "fairseq_nas.cli.main", "latency", "--space", str(space_file), "-n", str(n),
            *block, "--out", str(out)]
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(args, env=env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                if out.exists() and out.read_text().count("\n") >= 2:
                    break
                time.sleep(0.02)
            assert proc.poll() is None, f"finished or failed before the kill: {log.read_text()[-2000:]}"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
    before = read_jsonl(out)
    assert 2 <= len(before) < n
    with open(out, "a") as f:  # what a kill in the middle of a write would leave
        f.write(json.dumps(before[0])[:57])
    assert cli("--space", space_file, "-n", n, *block, "--out", out) == 0
    after = read_jsonl(out)  # every line is valid JSON again
    assert len(after) == n and len(set(keys(after))) == n
    assert sorted(keys(after)) == sorted((s.to_json(), 0) for s in sample_subnets(load_space(space_file), n, 0))
    assert after[:len(before)] == before  # rows measured before the kill are kept as they were


def test_store_repairs_only_the_last_line(tmp_path):
    good = {"subnet": load_space("shrinknas_iwslt14").smallest().to_dict(), "repeat": 0, "latency_ms": 1.0}
    p = tmp_path / "lat.jsonl"
    p.write_text(json.dumps(good) + "\n" + json.dumps(good)[:-1] + "}")  # complete JSON but no newline
    store = LatencyStore(p)
    assert store.repaired and len(store) == 1 and p.read_text().endswith("}\n")
    p.write_text("{broken\n" + json.dumps(good) + "\n")
    with pytest.raises(Exception, match="lat.jsonl:1"):
        LatencyStore(p)


def test_cli_refuses_to_mix_settings(space_file, tmp_path, capsys):
    out = tmp_path / "lat.jsonl"
    assert cli("--space", space_file, "-n", 1, *FAST, "--out", out) == 0
    assert cli("--space", space_file, "-n", 2, *FAST, "--beam", 3, "--out", out) == 2
    assert "beam 2 (now 3)" in capsys.readouterr().err


def test_cli_refuses_to_mix_conv_kernels(space_file, tmp_path, capsys, monkeypatch):
    """Rows timed on the native conv kernels and rows timed on the PyTorch paths do not mix."""
    from fairseq_nas.modules import native

    if native.conv_ops() is None:
        pytest.skip("native kernels unavailable here")
    out = tmp_path / "lat.jsonl"
    assert cli("--space", space_file, "-n", 1, *FAST, "--out", out) == 0
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    assert cli("--space", space_file, "-n", 2, *FAST, "--out", out) == 2
    assert "conv_kernels 'native' (now 'pytorch')" in capsys.readouterr().err


# --- vocabularies --------------------------------------------------------------------------


def test_dict_dir_vocab_sizes(tmp_path):
    from fairseq.data import Dictionary

    d = tmp_path / "data-bin"
    d.mkdir()
    (d / "dict.de.txt").write_text("".join(f"w{i} {100 - i}\n" for i in range(20)) + "w3 5 #fairseq:overwrite\n")
    (d / "dict.en.txt").write_text("".join(f"v{i} 3\n" for i in range(12)))
    (d / "train.de-en.de.idx").write_bytes(b"")
    assert dictionary_size(d / "dict.de.txt") == len(Dictionary.load(str(d / "dict.de.txt"))) == 25
    vocab = data_bin_vocab(d)
    assert (vocab.src, vocab.tgt, vocab.joined) == (25, 16, False)
    assert data_bin_vocab(d, "en", "de").src == 16
    (d / "dict.en.txt").write_bytes((d / "dict.de.txt").read_bytes())  # fairseq-preprocess --joined-dictionary
    assert data_bin_vocab(d).joined


def test_cli_with_dict_dir(space_file, tmp_path):
    d = tmp_path / "data-bin"
    d.mkdir()
    (d / "dict.xx.txt").write_text("".join(f"w{i} 1\n" for i in range(30)))
    out = tmp_path / "lat.jsonl"
    assert cli("--space", space_file, "-n", 1, "--runs", 2, "--warmup", 0, "--src-len", 4, "--dict", d,
               "--out", out) == 0
    row = read_jsonl(out)[0]
    assert row["src_vocab"] == row["tgt_vocab"] == 34


# --- errors: one line, exit 2 -------------------------------------------------------------


def error_of(capsys, *args) -> str:
    assert cli(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("fairseq-nas: error: ")
    return err[-1]


def test_cuda_without_gpu(space_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    msg = error_of(capsys, "--space", space_file, "-n", 1, *FAST, "--device", "cuda", "--out", tmp_path / "o.jsonl")
    assert "--device cuda" in msg and "--device cpu" in msg
    assert not (tmp_path / "o.jsonl").exists()


def test_subnet_outside_the_space_names_the_line(space_file, tmp_path, capsys):
    space = load_space(space_file)
    a = sample_subnets(space, 1, 0)[0]
    big = load_space("shrinknas_iwslt14").largest()  # embed 320: not in the tiny space
    src = tmp_path / "in.jsonl"
    src.write_text(a.to_json() + "\n" + a.to_json() + "\n" + big.to_json() + "\n")
    msg = error_of(capsys, "--space", space_file, "--subnets", src, *FAST, "--out", tmp_path / "o.jsonl")
    assert f"{src}:3" in msg and "not in space tiny_latency" in msg
    src.write_text(a.to_json() + "\n{not json\n")
    assert f"{src}:2" in error_of(capsys, "--space", space_file, "--subnets", src, *FAST, "--out", tmp_path / "o")


def test_other_errors(space_file, tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    missing = tmp_path / "nope"
    assert "no such directory" in error_of(capsys, "--space", space_file, "-n", 1, "--dict", missing, "--out", out)
    for bad in ("2/2", "x", "1/0", "1-2"):
        assert "--shard" in error_of(capsys, "--space", space_file, "-n", 1, *FAST, "--shard", bad, "--out", out)
    assert "-n N" in error_of(capsys, "--space", space_file, *FAST, "--out", out)
    assert "--vocab-size" in error_of(capsys, "--space", space_file, "-n", 1, "--vocab-size", "3", "--out", out)
    assert parse_shard("1/3") == (1, 3) and parse_shard(None) == (0, 1)
