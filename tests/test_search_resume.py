"""`fairseq-nas search` without a supernet: a ranker and a latency model fit on synthetic labels
of a tiny space, the search run through main() with --no-measure. Exit status of an infeasible
limit, --no-progress, and what --resume accepts, drops and refuses."""
from __future__ import annotations

import random

import numpy as np
import pytest

from fairseq_nas.cli.main import main
from fairseq_nas.ranking import LatencyModel, PairwiseRanker
from fairseq_nas.space import encode_many, parse_space

SPACE = """
name: tiny
encoder: {layers: [2], embed_dim: [16, 32], ffn_dim: [32, 64], heads: [2, 4]}
decoder: {layers: [1, 2], embed_dim: [16, 32], ffn_dim: [32, 64], heads: [2, 4], enc_attn_layers: [1, 2]}
"""
SMALL = ["--population", "12", "--parents", "4", "--mutations", "4", "--crossovers", "4", "--generations", "3",
         "--top-k", "2", "--no-measure", "--seed", "2"]


def _latency(s) -> float:  # grows with widths and depth, as measured latency does
    return 1.0 + s.decoder.depth + (s.encoder.embed_dim + s.decoder.embed_dim) / 32


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("search_resume")
    (work / "space.yaml").write_text(SPACE)
    space = parse_space(SPACE, "space.yaml")
    subnets = list({s.key(): s for s in (space.sample(random.Random(i)) for i in range(200))}.values())
    X = encode_many(subnets, space)
    LatencyModel(min_child_samples=3).fit(X, np.array([_latency(s) for s in subnets])).save(work / "latency")
    quality = np.array([s.encoder.embed_dim + s.decoder.embed_dim + 10 * s.decoder.depth for s in subnets])
    PairwiseRanker(min_child_samples=3).fit(X, quality).save(work / "ranker")
    (work / "ranker2").mkdir()
    for f in (work / "ranker").iterdir():  # the same ranker elsewhere: a different --ranker
        (work / "ranker2" / f.name).write_bytes(f.read_bytes())
    return work


def _search(work, capsys, *extra, limit="4.5", out="out", ranker="ranker", space="space.yaml"):
    capsys.readouterr()
    args = ["search", "--space", str(work / space), "--ranker", str(work / ranker), "--latency-model",
            str(work / "latency"), "--out", str(work / out), *SMALL, *extra]
    if limit is not None:
        args += ["--latency-ms", limit]
    rc = main(args)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_infeasible_limit_exits_3_with_one_line_naming_limit_and_fastest(work, capsys):
    rc, _, err = _search(work, capsys, "--no-progress", limit="0.01", out="infeasible")
    assert rc == 3
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # --no-progress: the error is all there is
    assert lines[0].startswith("fairseq-nas: error: --latency-ms 0.01: no subnet meets the limit; the fastest "
                               "predicted latency seen was ")  # scripts/demo.sh greps "no subnet meets the limit"
    fastest = float(lines[0].split("seen was ")[1].split(" ms")[0])
    assert fastest > 0.01
    # a limit just above the fastest reachable is met
    rc, out, _ = _search(work, capsys, limit=f"{fastest * 1.01:.4f}", out="infeasible")
    assert rc == 0, out
    assert (work / "infeasible" / "best.json").is_file()


def test_help_documents_the_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    help_text = capsys.readouterr().out
    assert "exit status:" in help_text and "\n  3    infeasible limit" in help_text


def test_no_progress_leaves_stderr_without_bars(work, capsys):
    rc, out, err = _search(work, capsys, out="progress")
    assert rc == 0 and "evolution" in err  # the bar, by default
    rc, out, err = _search(work, capsys, "--no-progress", out="progress")
    assert rc == 0 and "best:" in out
    assert "evolution" not in err and "\r" not in err, err
