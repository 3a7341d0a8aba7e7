"""`fairseq-nas search` end to end: a ranker and a latency model fit on real measurements of
a trained supernet's space, the search under a limit with the top K measured for real, and
best.json exported and fine-tuned through the export issue's commands."""
from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys

import numpy as np
import pytest

from fairseq_nas.ranking import LatencyModel, PairwiseRanker
from fairseq_nas.space import encode_many
from helpers import USER_DIR, env, run_cli, train_losses

SEARCH = ["--population", "16", "--parents", "4", "--mutations", "6", "--crossovers", "6", "--generations", "4",
          "--top-k", "3", "--runs", "5", "--warmup", "1", "--seed", "2"]


@pytest.fixture(scope="module")
def predictors(trained_supernet, demo_data, tmp_path_factory):
    """A latency model fit on latencies measured here, and a ranker on a synthetic quality label."""
    import torch

    from fairseq_nas.latency.measure import Protocol, measure
    from fairseq_nas.latency.vocab import data_bin_vocab
    from fairseq_nas.models.export import load_supernet_checkpoint, supernet_from_checkpoint

    work = tmp_path_factory.mktemp("search")
    space, _ = supernet_from_checkpoint(load_supernet_checkpoint(trained_supernet))
    space.save(work / "space.yaml")
    vocab = data_bin_vocab(demo_data)
    subnets = [space.sample(random.Random(i)) for i in range(24)]
    torch.manual_seed(0)
    ms = [measure(s, space, vocab.src, vocab.tgt, Protocol(runs=3, warmup=1, rounds=1))["latency_ms"] for s in subnets]
    X = encode_many(subnets, space)
    LatencyModel(min_child_samples=3).fit(X, ms).save(work / "latency")
    quality = np.array([s.encoder.embed_dim + s.decoder.embed_dim + 10 * s.decoder.depth for s in subnets])
    PairwiseRanker(min_child_samples=3).fit(X, quality).save(work / "ranker")
    return work, float(np.median(ms)), space


def _search(work, limit, *extra, check=True):
    proc = subprocess.run([sys.executable, "-m", "fairseq_nas.cli.main", "search", "--space",
                           str(work / "space.yaml"), "--ranker", str(work / "ranker"), "--latency-model",
                           str(work / "latency"), "--latency-ms", f"{limit:.3f}", "--out", str(work / "out"),
                           *SEARCH, *extra], capture_output=True, text=True, env=env(), timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_search_writes_outputs_measures_only_top_k_and_meets_the_limit(predictors, demo_data):
    work, median_ms, space = predictors
    limit = median_ms * 1.5
    proc = _search(work, limit, "--dict", str(demo_data))
    out = work / "out"
    best = json.loads((out / "best.json").read_text())
    space.validate_subnet(__import__("fairseq_nas.space", fromlist=["Subnet"]).Subnet.from_dict(best))
    top = [json.loads(line) for line in (out / "topk.jsonl").read_text().splitlines()]
    assert len(top) == 3 and all(r["measured_latency_ms"] is not None for r in top)
    # predicted and measured named apart; `latency_ms` is latency.jsonl's measured number, not used here
    assert all("latency_ms" not in r and r["predicted_latency_ms"] > 0 for r in top)
    winner = next(r for r in top if r["subnet"] == best)
    assert winner["measured_latency_ms"] <= limit and all(r["predicted_latency_ms"] <= limit for r in top)
    gens = [json.loads(line) for line in (out / "search.jsonl").read_text().splitlines()]
    assert [g["generation"] for g in gens] == list(range(5))
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "rank" in proc.stdout and "best:" in proc.stdout


def test_search_is_deterministic_and_resumes(predictors, demo_data):
    work, median_ms, _ = predictors
    _search(work, median_ms * 1.5, "--no-measure")
    first = (work / "out" / "search.jsonl").read_text()
    lines = first.splitlines(keepends=True)
    (work / "out" / "search.jsonl").write_text("".join(lines[:2]) + lines[2][:40])  # killed mid-write
    _search(work, median_ms * 1.5, "--no-measure", "--resume")

    def rows(text):  # "evaluated" counts the subnets scored by the current process only
        return [{k: v for k, v in json.loads(line).items() if k != "evaluated"} for line in text.splitlines()]

    assert rows((work / "out" / "search.jsonl").read_text()) == rows(first)


def test_infeasible_limit_is_a_one_line_error(predictors):
    work, _, _ = predictors
    proc = _search(work, 0.001, "--no-measure", check=False)
    assert proc.returncode == 3  # infeasible limit: its own exit status (fairseq-nas search --help)
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("fairseq-nas: error: --latency-ms 0.001: no subnet meets the limit; the fastest "
                                "predicted latency seen was")


def test_best_json_exports_and_finetunes(predictors, trained_supernet, demo_data):
    work, median_ms, _ = predictors
    _search(work, median_ms * 1.5, "--no-measure")
    best = work / "out" / "best.json"
    run_cli("fairseq_nas.cli.main", ["export", "--supernet", str(trained_supernet), "--subnet", str(best),
                                     "--out", str(work / "best.pt")])
    ft = run_cli("fairseq_cli.train", [str(demo_data), "--user-dir", USER_DIR, "--arch", "nas_subnet", "--subnet",
                                       str(work / "best.pt"), "--finetune-from-model", str(work / "best.pt"),
                                       "--optimizer", "adam", "--lr", "5e-4", "--max-tokens", "1500",
                                       "--criterion", "label_smoothed_cross_entropy", "--max-update", "3",
                                       "--no-progress-bar", "--log-format", "json", "--log-interval", "1",
                                       "--save-dir", str(work / "ft"), "--no-epoch-checkpoints"])
    assert len(train_losses(ft.stdout + ft.stderr)) == 3
    assert (work / "ft" / "checkpoint_last.pt").is_file()


def test_reference_is_measured_with_the_top_k_and_sets_their_limit(predictors, trained_supernet, demo_data):
    """--reference: a trained checkpoint timed in the same rounds as the top K; each candidate is held to
    the reference there (its median per-round ratio to it, less the margin), not to --latency-ms, and the
    first that meets it is timed again with the reference before it wins."""
    work, median_ms, space = predictors
    (work / "largest.json").write_text(json.dumps(space.largest().to_dict()))
    ref = work / "largest.pt"
    run_cli("fairseq_nas.cli.main", ["export", "--supernet", str(trained_supernet), "--subnet",
                                     str(work / "largest.json"), "--out", str(ref)])
    proc = _search(work, median_ms * 1.5, "--dict", str(demo_data), "--reference", str(ref), check=False)
    top = [json.loads(line) for line in (work / "out" / "topk.jsonl").read_text().splitlines()]
    assert len(top) >= 3
    for r in top:
        m = r["measured"]
        assert m["reference_ms"] > 0 and m["limit_ms"] == pytest.approx(m["reference_ms"])
        rounds = m["round_ms"]
        assert len(rounds) == m["rounds"]
        assert m["meets"] == (m["ratio"] <= 1.0)
        confirmed = m.get("confirmation")
        # confirmed exactly when it met in its batch and no better-ranked candidate had won already;
        # met in its batch but never confirmed: None
        assert r["meets_limit"] == (False if not m["meets"] else None if confirmed is None else confirmed["meets"])
        if confirmed is not None:
            assert m["meets"] and confirmed["meets"] == (confirmed["ratio"] <= 1.0)
    if proc.returncode == 0:  # the winner is the first that meets the reference and again, not --latency-ms
        best = json.loads((work / "out" / "best.json").read_text())
        winner = next(r for r in top if r["meets_limit"])
        assert winner["subnet"] == best and winner["measured"]["confirmation"]["meets"]
        assert all("confirmation" not in r["measured"] or not r["measured"]["confirmation"]["meets"]
                   for r in top[:top.index(winner)])
        assert "in the same rounds as the winner" in proc.stdout and "again in fresh rounds" in proc.stdout
    else:
        assert proc.stderr.strip().splitlines()[-1].startswith("fairseq-nas: error: --reference")
    # nothing measures at 1% of the reference: a one-line error naming the reference, and no best.json
    proc = _search(work, median_ms * 1.5, "--dict", str(demo_data), "--reference", str(ref),
                   "--reference-margin", "0.99", "--max-measured", "3", check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"fairseq-nas: error: --reference {ref}: none of the 3 best candidates measures at most "
                           "0.01 x the reference"), last
    assert not (work / "out" / "best.json").exists()


def test_recalibrate_searches_again_under_the_limit_the_measurements_imply(predictors, trained_supernet, demo_data):
    """Against the smallest subnet as the reference, the candidates under a loose limit all measure
    slower: the search scales its predicted limit down by what it measured and searches again."""
    work, median_ms, space = predictors
    (work / "smallest.json").write_text(json.dumps(space.smallest().to_dict()))
    ref = work / "smallest.pt"
    run_cli("fairseq_nas.cli.main", ["export", "--supernet", str(trained_supernet), "--subnet",
                                     str(work / "smallest.json"), "--out", str(ref)])
    first = median_ms * 1.5
    proc = _search(work, first, "--dict", str(demo_data), "--reference", str(ref), "--reference-margin", "0.05",
                   "--recalibrate", "1", "--max-measured", "3", check=False)
    top = [json.loads(line) for line in (work / "out" / "topk.jsonl").read_text().splitlines()]
    one = [r for r in top if r["attempt"] == 1]
    assert one and all(r["predicted_limit_ms"] == pytest.approx(first, abs=1e-3) for r in one)
    assert not any(r["meets_limit"] for r in one)  # nothing mid-sized measures 0.95 x the smallest
    expected = statistics.median(r["predicted_latency_ms"] * 0.95 / r["measured"]["ratio"] for r in one)
    assert expected < first
    assert f"searching again under a predicted-latency limit of {expected:.2f} ms" in proc.stderr
    two = [r for r in top if r["attempt"] == 2]
    if "is out of reach" not in proc.stderr:  # nothing of the space is predicted under it: no second top K
        assert two and all(r["predicted_limit_ms"] == pytest.approx(expected) for r in two)
        assert all(r["predicted_latency_ms"] <= expected + 1e-9 for r in two)
        assert [r["rank"] for r in top] == list(range(1, len(top) + 1))
    if proc.returncode != 0:
        assert proc.returncode == 2 and f"none of the {len(top)} best candidates" in proc.stderr


@pytest.mark.parametrize("extra, message", [
    (["--reference-margin", "1.5"], "--reference-margin 1.5: expected 0 <= M < 1"),
    (["--recalibrate", "-1"], "--recalibrate -1: expected 0 or more"),
    (["--no-measure"], "--reference: nothing is measured with --no-measure"),
    ([], "--reference needs --dict DIR"),
    (["--dict", "DATA"], "--reference: "),  # the file is not a checkpoint: named with the flag
])
def test_reference_errors_are_one_line(predictors, demo_data, tmp_path, extra, message):
    work, median_ms, _ = predictors
    ref = tmp_path / "ref.pt"
    ref.write_bytes(b"not a checkpoint")
    extra = [str(demo_data) if e == "DATA" else e for e in extra]
    proc = _search(work, median_ms, "--reference", str(ref), *extra, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(f"fairseq-nas: error: {message}")
