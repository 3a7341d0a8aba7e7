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
    for name in ("supernet/checkpoint_last.pt", "supernet/dss.jsonl", "supernet/dss_best.json", "latency.jsonl",
                 "archs.jsonl", "ranker/ranker/ranker.json", "ranker/pruned_space.yaml",
                 "latency_model/ranker/ranker.json", "search/best.json", "search/topk.jsonl", "search/search.jsonl",
                 "found.pt", "largest.pt", "smallest.pt", "compare.latency.jsonl", "REPORT.md"):
        assert (out / name).is_file(), name
    for png in ("pareto.png", "importance.png", "dss_divergence.png", "dss_losses.png"):
        assert (out / "plots" / png).read_bytes()[:4] == b"\x89PNG", png
    for model in ("found", "largest", "smallest", "transformer"):
        assert (out / f"{model}.bleu.json").is_file(), f"{model}.bleu.json missing\n" + proc.stdout[-3000:]
        bleu = json.loads((out / f"{model}.bleu.json").read_text())
        assert bleu["sentences"] == 300 and 0 <= bleu["tokenized_bleu"] <= 100
    lat = [json.loads(line) for line in (out / "compare.latency.jsonl").read_text().splitlines()]
    assert len(lat) == 4 and all(r["latency_ms"] > 0 for r in lat)
    report = (out / "REPORT.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| ") and "n/a" not in line]
    assert sum(line.startswith(("| subnet found", "| largest", "| smallest", "| fairseq transformer"))
               for line in table) == 4
    assert "![" in report and "## Search" in report
    assert "| subnet found by the search |" in proc.stdout  # the summary table is printed at the end
