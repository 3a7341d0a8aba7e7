"""`scripts/demo.sh` in its tiny mode: every stage runs and every artifact and the report exist."""
from __future__ import annotations

import json
import os
import subprocess

from helpers import REPO, env


def test_tiny_demo_produces_every_artifact_and_the_report(tmp_path):
    out = tmp_path / "demo"
    e = env()
    e["DEMO_SIZE"] = "tiny"
    e["OMP_NUM_THREADS"] = "1"
    e["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{e.get('PATH', '')}"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), str(out)], capture_output=True, text=True,
                          env=e, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = (out / "claim" / "baselines.txt").read_text().split()
    assert names == ["transformer-128d-3x3"]  # one limit in the smoke run (make demo uses two)
    for name in ("supernet/checkpoint_last.pt", "latency.jsonl", "archs.jsonl", "ranker/ranker/ranker.json",
                 "latency_model/ranker/ranker.json", "claim/baseline-latency.jsonl", "claim/latency.jsonl",
                 "claim/compute.jsonl", "comparison.jsonl", "REPORT.md"):
        assert (out / name).is_file(), name
    for n in names:
        for name in ("baseline.json", "baseline/checkpoint_best.pt", "search/best.json", "search/topk.jsonl",
                     "found.json", "found.pt", "scratch/checkpoint_best.pt", "finetune/checkpoint_best.pt"):
            assert (out / "claim" / n / name).is_file(), f"{n}/{name}"
        assert (out / "plots" / f"pareto-{n}.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "plots" / "claim.png").read_bytes()[:4] == b"\x89PNG"
    rows = [json.loads(line) for line in (out / "comparison.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == names
    for r in rows:
        for model in ("baseline", "scratch", "finetune"):
            m = r[model]
            assert 0 <= m["bleu"] <= 100 and m["sacrebleu_signature"].startswith("nrefs:1")
            assert m["latency_ms"] > 0 and m["params"] > 0
        assert (r["baseline"]["updates"], r["scratch"]["updates"], r["finetune"]["updates"]) == (12, 12, 6)
        assert r["finetune"]["subnet"] == r["scratch"]["subnet"]  # one found architecture, two ways to train it
        # the search's limit is in the latency model's frame (its prediction for the baseline's architecture
        # less the margin), not the baseline's measured figure, which may lie on either side of it
        search = json.loads((out / "claim" / r["name"] / "search.json").read_text())
        assert 0 < search["margin"] < 1 and r["predicted_ms"] == search["predicted_ms"] > 0
        assert abs(r["search_limit_ms"] - r["predicted_ms"] * (1 - search["margin"])) <= 1e-3
        assert r["claim1"] in (True, False) and r["claim2"] in (True, False)
    # every trained model was timed in one measurement
    lat = [json.loads(line) for line in (out / "claim" / "latency.jsonl").read_text().splitlines()]
    assert len(lat) == 3 * len(names) and {r["arch"] for r in lat} == {"transformer", "nas_subnet"}
    report = (out / "REPORT.md").read_text()
    assert report.splitlines()[2].startswith("- **Claim 1") and "![BLEU against measured latency]" in report
    assert "## Compute of each path" in report and "| supernet |" in report
    assert "Claim 2" in proc.stdout  # the verdict is printed at the end
