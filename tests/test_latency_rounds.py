"""Interleaved measurement in rounds: the scheduler, the sidecar, resume after a kill, and the
host controls (load check, pinning, malloc)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fairseq_nas.cli.main import main
from fairseq_nas.errors import FairseqNasError
from fairseq_nas.latency import host
from fairseq_nas.latency.measure import Protocol, measure_many
from fairseq_nas.latency.rounds import round_order, run_rounds, runs_in_round
from fairseq_nas.latency.store import RoundLog, rounds_path, row_key, sample_subnets
from fairseq_nas.space import Subnet, load_space
from helpers import REPO, env, read_jsonl

TINY_SPACE = """
name: tiny_rounds
encoder:
  layers: [1]
  embed_dim: [16, 32]
  ffn_ratio: [1, 2]
  heads: [2]
  operator: [self_attention, lightweight_conv]
  rpr_len: [0]
  norm: [pre]
  kernel_size: [3]
decoder:
  layers: [1, 2]
  embed_dim: [16, 32]
  ffn_ratio: [1, 2]
  heads: [2]
  operator: [self_attention, lightweight_conv]
  rpr_len: [0]
  norm: [pre]
  kernel_size: [3, 3]
  enc_attn_layers: [1]
"""


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture
def space_file(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_SPACE)
    return p


# --- the scheduler ------------------------------------------------------------------------------


def test_every_key_once_per_round_in_a_shuffled_seeded_order():
    keys = list("abcdefgh")
    calls: list[tuple[str, int]] = []
    ends: list[tuple[int, list[str]]] = []
    out = run_rounds(keys, lambda k, r: calls.append((k, r)) or f"{k}{r}", rounds=4, seed=3,
                     on_round_end=lambda r, finished: ends.append((r, finished)))
    per_round = [[k for k, r in calls if r == i] for i in range(4)]
    assert [sorted(p) for p in per_round] == [keys] * 4  # every key exactly once in every round
    assert [k for k, _ in calls] == [k for p in per_round for k in p]  # round after round
    assert len({tuple(p) for p in per_round}) > 1  # the order changes between rounds
    assert per_round == [round_order(keys, i, 3) for i in range(4)]  # seeded: reproducible
    assert round_order(keys, 0, 3) != round_order(keys, 0, 4)
    assert out["c"] == ["c0", "c1", "c2", "c3"]
    assert ends == [(0, []), (1, []), (2, []), (3, keys)]


def test_resumed_rounds_time_only_what_is_missing():
    """A kill in the middle of round 2: a, b have 3 rounds, the rest 2; resuming completes round 2 for
    the rest, then round 3 for all; no round is timed twice."""
    keys = list("abcde")
    done = {"a": 3, "b": 3, "c": 2, "d": 2, "e": 2}
    calls: list[tuple[str, int]] = []
    finished: list[str] = []
    run_rounds(keys, lambda k, r: calls.append((k, r)), rounds=4, seed=0, done=done,
               on_round_end=lambda r, f: finished.extend(f))
    assert sorted(calls) == sorted([(k, 2) for k in "cde"] + [(k, 3) for k in keys])
    assert finished == keys
    assert run_rounds(keys, lambda k, r: calls.append(("x", r)), rounds=4, done=dict.fromkeys(keys, 4)) == \
        {k: [] for k in keys}


def test_runs_are_split_evenly_over_rounds():
    assert [runs_in_round(10, 4, r) for r in range(4)] == [3, 3, 2, 2]
    assert sum(runs_in_round(300, 30, r) for r in range(30)) == 300
    assert Protocol(runs=3, rounds=30).n_rounds == 3 and Protocol(runs=300, protocol="block").n_rounds == 1


def test_measure_many_interleaves_real_models(space_file):
    space = load_space(space_file)
    subnets = sample_subnets(space, 3, seed=1)
    seen: list[tuple[int, int]] = []
    done: list[int] = []
    rows = measure_many(list(enumerate(subnets)), space, 30, 30,
                        Protocol(src_len=4, beam=2, warmup=1, runs=6, rounds=3, seed=5),
                        on_round=lambda k, r, e: seen.append((k, r)), on_done=lambda k, row: done.append(k))
    assert [sorted(k for k, r in seen if r == i) for i in range(3)] == [[0, 1, 2]] * 3
    assert [[k for k, r in seen if r == i] for i in range(3)] == [round_order([0, 1, 2], i, 5) for i in range(3)]
    assert done == [0, 1, 2] and sorted(rows) == [0, 1, 2]
    for k, row in rows.items():
        assert Subnet.from_dict(row["subnet"]) == subnets[k]
        assert len(row["round_ms"]) == 3 and row["rounds"] == 3 and row["protocol"] == "rounds"


# --- the command: sidecar and resume after a kill ----------------------------------------------


def _sidecar(out: Path) -> list[dict]:
    p = rounds_path(out)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []


def test_resume_after_kill_loses_and_repeats_nothing(space_file, tmp_path):
    """SIGKILL while the second group of subnets is in its rounds, damage the sidecar's last line,
    resume: every subnet has one row, made of exactly its R rounds; rows and rounds written
    before the kill are kept as they were, and only the damaged round is timed again."""
    n, rounds = 4, 3
    out = tmp_path / "lat.jsonl"
    opts = ["--space", str(space_file), "-n", str(n), "--runs", "60", "--rounds", str(rounds), "--warmup", "1",
            "--src-len", "8", "--vocab-size", "40", "--group", "2", "--no-progress"]
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "fairseq_nas.cli.main", "latency", *opts, "--out", str(out)],
                                env=env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and proc.poll() is None:
                if len(_sidecar(out)) >= 2 * rounds + 1:  # the first group done, the second begun
                    break
                time.sleep(0.01)
            assert proc.poll() is None, f"finished or failed before the kill: {log.read_text()[-2000:]}"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
    rows_before = read_jsonl(out)
    side_before = _sidecar(out)
    assert len(rows_before) == 2 and 2 * rounds < len(side_before) < n * rounds
    with open(rounds_path(out), "a") as f:  # what a kill in the middle of a write leaves
        f.write(json.dumps(side_before[-1])[:60])

    assert main(["latency", *opts, "--out", str(out)]) == 0
    rows = read_jsonl(out)
    keys = [row_key(r["subnet"], r["repeat"]) for r in rows]
    expected = sorted((s.to_json(), 0) for s in sample_subnets(load_space(space_file), n, 0))
    assert sorted(keys) == expected and len(set(keys)) == n  # nothing lost, nothing repeated
    assert rows[:2] == rows_before
    side = _sidecar(out)  # every line valid again
    assert side[:len(side_before)] == side_before  # rounds done before the kill were not timed again
    per_key: dict = {}
    for e in side:
        per_key.setdefault(row_key(e["subnet"], e["repeat"]), []).append(e["round"])
    assert {k: sorted(v) for k, v in per_key.items()} == {k: list(range(rounds)) for k in expected}
    for row in rows:  # each row is its sidecar rounds
        k = row_key(row["subnet"], row["repeat"])
        mine = [e for e in side if row_key(e["subnet"], e["repeat"]) == k]
        totals = [a + b for e in mine for a, b in zip(e["encoder"], e["decoder"])]
        assert len(totals) == 60 and row["total_ms"]["min"] == min(totals)
        assert row["load"]["before"]["cores"] >= 1

    # a third run finds everything done and measures nothing
    assert main(["latency", *opts, "--out", str(out)]) == 0
    assert read_jsonl(out) == rows and _sidecar(out) == side


def test_sidecar_with_other_settings_is_an_error(space_file, tmp_path, capsys):
    out = tmp_path / "lat.jsonl"
    s = sample_subnets(load_space(space_file), 1, 0)[0]
    log = RoundLog(rounds_path(out), {"rounds": 5, "beam": 2})
    log.append(s.to_dict(), 0, 0, {"encoder": [1.0], "decoder": [1.0], "cpu": [1.0]})
    with pytest.raises(FairseqNasError, match=r"lat\.rounds\.jsonl: has rounds measured with other settings: "
                                              r"rounds 5 \(now 3\)"):
        RoundLog(rounds_path(out), {"rounds": 3, "beam": 2})
    assert RoundLog(rounds_path(out), {"rounds": 5, "beam": 2}).done(row_key(s, 0)) == 1


# --- host controls --------------------------------------------------------------------------------


class FakeStat:
    """/proc/stat of two cores that other processes keep `busy` (fraction per core) busy."""

    def __init__(self, busy: float):
        self.busy, self.t = busy, 0

    def __call__(self):
        self.t += 1000
        b = int(self.busy * self.t)
        return {0: (b, self.t), 1: (b, self.t)}


def test_load_check_warns_and_strict_refuses(capsys):
    meter = host.LoadMeter(cores=[0, 1], read=FakeStat(0.9), own_cpu_s=lambda: 0.0)
    report = host.sample_load(1, seconds=0.0, meter=meter, loadavg=lambda: 0.5)
    assert report.busy_by_others == pytest.approx(1.8) and report.free == pytest.approx(0.2)
    line = host.check_load(report, strict=False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: latency: other processes kept 1.8 of 2 cores busy")
    assert line in err and "needs 1" in line
    with pytest.raises(FairseqNasError, match="--strict"):
        host.check_load(report, strict=True)
    quiet = host.sample_load(1, seconds=0.0, meter=host.LoadMeter([0, 1], FakeStat(0.1), lambda: 0.0),
                             loadavg=lambda: 0.2)
    assert host.check_load(quiet, strict=True) is None and capsys.readouterr().err == ""
    assert quiet.least_busy(1) == [0]


def test_cli_load_warning_and_strict(space_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(host, "_read_proc_stat", FakeStat(0.95))
    monkeypatch.setattr(host, "allowed_cores", lambda: [0, 1])
    out = tmp_path / "lat.jsonl"
    opts = ["latency", "--space", str(space_file), "-n", "1", "--runs", "2", "--warmup", "0", "--src-len", "4",
            "--vocab-size", "40", "--no-progress"]
    assert main([*opts, "--strict", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fairseq-nas: error: latency: other processes kept") and "--strict" in err[-1]
    assert not out.exists()
    assert main([*opts, "--out", str(out)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: latency:")]
    assert len(warnings) == 1
    row = read_jsonl(out)[0]
    assert row["load"]["before"]["busy_by_others"] > 1.5


def test_pinning_restores_the_affinity():
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no sched_setaffinity here")
    before = os.sched_getaffinity(0)
    core = min(before)
    with host.pinned([core]) as cores:
        assert cores == [core] and os.sched_getaffinity(0) == {core}
    assert os.sched_getaffinity(0) == before
    assert host.parse_cores("auto") == [] and host.parse_cores(None) is None
    assert host.parse_cores(f"{core}") == [core]
    with pytest.raises(FairseqNasError, match="--cores"):
        host.parse_cores("0-x")
    with pytest.raises(FairseqNasError, match="not available"):
        host.parse_cores("4096")


def test_malloc_tuning():
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    assert host.tune_allocator() == {"mmap_threshold": host.MMAP_THRESHOLD, "trim_threshold": host.TRIM_THRESHOLD}


# --- the search's top K ---------------------------------------------------------------------------


def test_search_measures_the_top_k_together_then_batches_of_k():
    import random

    from fairseq_nas.search import measure_until_one_meets
    from fairseq_nas.search.candidates import Candidate

    space = load_space("shrinknas_iwslt14")
    cands = [Candidate(space.sample(random.Random(i)), score=float(-i), latency_ms=1.0, params=None) for i in range(9)]
    real = {c.subnet.key(): ms for c, ms in zip(cands, [9, 8, 9, 7, 7, 6, 2, 1, 1])}
    batches: list[list[int]] = []

    def measure_many(batch):
        batches.append([cands.index(c) for c in batch])
        return [real[c.subnet.key()] for c in batch]

    got = measure_until_one_meets(cands[:3], cands[3:], 5.0, 9, measure_many=measure_many)
    assert batches == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]  # the top 3 in one call, against each other
    assert [ms for _, ms in got] == [9, 8, 9, 7, 7, 6, 2, 1, 1]
    batches.clear()
    assert len(measure_until_one_meets(cands[:3], cands[3:], 8.5, 9, measure_many=measure_many)) == 3
    assert batches == [[0, 1, 2]]
    with pytest.raises(TypeError):
        measure_until_one_meets(cands[:3], cands[3:], 8.5, 9)
    # a limit per measured candidate (a reference timed in each batch): batch 1 is held to 6.5, batch 2 to 8
    batches.clear()
    limit = {c.subnet.key(): 6.5 if i < 3 else 8.0 for i, c in enumerate(cands)}
    got = measure_until_one_meets(cands[:3], cands[3:], 5.0, 9, measure_many=measure_many,
                                  meets_of=lambda c, ms: ms <= limit[c.subnet.key()])
    assert batches == [[0, 1, 2], [3, 4, 5]]  # 7 meets batch 2's limit of 8, not --latency-ms's 5
    # confirmation: the first candidate that meets is asked once; a "no" sends the search on as if it missed
    batches.clear()
    asked: list[int] = []

    def confirm(c):
        asked.append(cands.index(c))
        return cands.index(c) != 3  # candidate 3 met by luck: not again

    got = measure_until_one_meets(cands[:3], cands[3:], 5.0, 9, measure_many=measure_many,
                                  meets_of=lambda c, ms: ms <= limit[c.subnet.key()], confirm=confirm)
    assert batches == [[0, 1, 2], [3, 4, 5]]
    assert asked == [3, 4]  # 3 not confirmed, 4 (same batch, also under 8) confirmed: no third batch
    # meets_of replaces the comparison (e.g. a per-round ratio to the reference)
    batches.clear()
    got = measure_until_one_meets(cands[:3], cands[3:], None, 9, measure_many=measure_many,
                                  meets_of=lambda c, ms: ms <= 2)
    assert batches == [[0, 1, 2], [3, 4, 5], [6, 7, 8]] and len(got) == 9


def test_paired_ratio_cancels_drift_between_rounds():
    from fairseq_nas.search import paired_ratio

    # the machine slows 3x in round 3: the candidate is 0.9 x the reference in every round
    ref = [10.0, 11.0, 30.0, 10.5, 12.0]
    cand = [9.0, 9.9, 27.0, 9.45, 10.8]
    assert paired_ratio(cand, ref) == pytest.approx(0.9)
    # medians alone: the candidate's round medians against the reference's ones in other rounds
    assert paired_ratio([9.0, 30.0, 9.0], [10.0, 10.0, 30.0]) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="same number of rounds"):
        paired_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="same number of rounds"):
        paired_ratio([], [])


def test_round_ratio_pairs_only_rounds_measured_together():
    from fairseq_nas.search import round_ratio

    assert round_ratio([9.0, 30.0, 9.0], [10.0, 10.0, 30.0]) == pytest.approx(0.9)
    assert round_ratio([9.0, 30.0], [10.0, 10.0, 30.0]) is None  # different measurements
    assert round_ratio(None, [10.0]) is None and round_ratio([], []) is None


# --- drift between groups: the anchor -------------------------------------------------------------


def test_anchor_is_the_median_size_subnet():
    from fairseq_nas.latency.anchor import choose_anchor

    assert choose_anchor(["a", "b", "c", "d", "e"], [5, 1, 4, 2, 3]) == "e"  # sizes 1 2 3 4 5: the third
    assert choose_anchor(["a", "b", "c", "d"], [4, 1, 3, 2]) == "d"  # two at the median: the smaller
    with pytest.raises(ValueError):
        choose_anchor([], [])


def test_anchor_is_timed_in_every_group_and_each_row_gets_its_groups_level(space_file, tmp_path):
    """Three groups: the anchor (not a row, not in the sidecar) is timed in each; every row records
    the anchor's latency in its own group and the first group's, and drift_corrected_ms is its
    latency scaled by their ratio (identity in the first group). One group, or --no-anchor: no anchor,
    and drift_corrected_ms is latency_ms."""
    from fairseq_nas.latency.anchor import choose_anchor
    from fairseq_nas.latency.costs import count_params

    n, rounds = 5, 2
    opts = ["--space", str(space_file), "-n", str(n), "--runs", "4", "--rounds", str(rounds), "--warmup", "1",
            "--src-len", "6", "--vocab-size", "40", "--group", "2", "--no-progress"]
    out = tmp_path / "lat.jsonl"
    assert main(["latency", *opts, "--out", str(out)]) == 0
    rows = read_jsonl(out)
    assert len(rows) == n and len(_sidecar(out)) == n * rounds  # the anchor's rounds are not kept
    space = load_space(space_file)
    subnets = sample_subnets(space, n, 0)
    expected_anchor = choose_anchor(subnets, [count_params(s, space, 40, 40) for s in subnets])
    assert {r["anchor"]["subnet"] for r in rows} == {expected_anchor.to_json()}
    ref = rows[0]["anchor"]["ref_ms"]
    assert ref > 0 and all(r["anchor"]["ref_ms"] == ref for r in rows)
    assert [r["anchor"]["ms"] == ref for r in rows[:2]] == [True, True]  # the first group sets the level
    assert len({r["anchor"]["ms"] for r in rows}) == 3  # one level per group
    for r in rows:
        assert r["drift_corrected_ms"] == pytest.approx(r["latency_ms"] * ref / r["anchor"]["ms"])

    for extra, name in ((["--group", "8"], "one_group.jsonl"), (["--no-anchor"], "no_anchor.jsonl")):
        assert main(["latency", *opts, *extra, "--out", str(tmp_path / name)]) == 0
        plain = read_jsonl(tmp_path / name)
        assert all("anchor" not in r and r["drift_corrected_ms"] == r["latency_ms"] for r in plain)


def test_a_resumed_run_keeps_the_anchor_and_level_of_the_earlier_rows(space_file, tmp_path):
    """Rows measured after a resume (here: more subnets added to the file in one group) are put at
    the level of the file's first group, with the file's anchor."""
    opts = ["--space", str(space_file), "--runs", "4", "--rounds", "2", "--warmup", "1", "--src-len", "6",
            "--vocab-size", "40", "--group", "2", "--no-progress"]
    out = tmp_path / "lat.jsonl"
    assert main(["latency", *opts, "-n", "3", "--out", str(out)]) == 0
    first = read_jsonl(out)
    assert main(["latency", *opts, "-n", "5", "--out", str(out)]) == 0  # two more: one group
    rows = read_jsonl(out)
    assert rows[:3] == first and len(rows) == 5
    for r in rows[3:]:
        assert r["anchor"]["subnet"] == first[0]["anchor"]["subnet"]
        assert r["anchor"]["ref_ms"] == first[0]["anchor"]["ref_ms"]
        assert r["drift_corrected_ms"] == pytest.approx(r["latency_ms"] * r["anchor"]["ref_ms"] / r["anchor"]["ms"])
