"""`fairseq-nas search` without a supernet: a ranker and a latency model fit on synthetic labels
of a tiny space, the search run through main() with --no-measure. Exit status of an infeasible
limit, --no-progress, and what --resume accepts, drops and refuses."""
from __future__ import annotations

import json
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
SMALL = ["--population", "12", "--parents", "4", "--mutations", "4", "--crossovers", "4",
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
    (work / "pruned.yaml").write_text(SPACE.replace("embed_dim: [16, 32], ffn_dim: [32, 64], heads: [2, 4]}",
                                                    "embed_dim: [32], ffn_dim: [32, 64], heads: [2, 4]}", 1))
    return work


def _search(work, capsys, *extra, limit="4.5", out="out", ranker="ranker", space="space.yaml", generations="3"):
    capsys.readouterr()
    args = ["search", "--space", str(work / space), "--ranker", str(work / ranker), "--latency-model",
            str(work / "latency"), "--out", str(work / out), *SMALL, "--generations", generations, *extra]
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


def _rows(text):  # "evaluated" counts the subnets scored by the current process only
    return [{k: v for k, v in json.loads(line).items() if k != "evaluated"} for line in text.splitlines()]


def test_a_last_line_cut_by_a_kill_is_dropped_with_a_warning(work, capsys):
    rc, _, _ = _search(work, capsys, "--no-progress", out="cut")
    log = work / "cut" / "search.jsonl"
    first = log.read_text()
    lines = first.splitlines(keepends=True)
    assert len(lines) == 4 and all(json.loads(line)["settings"]["latency_ms"] == 4.5 for line in lines)
    log.write_text("".join(lines[:2]) + lines[2][:40])  # killed mid-write of generation 2
    rc, _, err = _search(work, capsys, "--no-progress", "--resume", out="cut")
    assert rc == 0
    assert err.strip().splitlines() == [f"fairseq-nas: warning: {log}: dropped line 3, cut short (killed "
                                        "mid-write); resuming after generation 1"]
    assert _rows(log.read_text()) == _rows(first)  # as if never killed

    log.write_text(lines[0][:25])  # cut in its first row: nothing to resume from
    rc, _, err = _search(work, capsys, "--no-progress", "--resume", out="cut")
    assert rc == 0 and "no complete row before it: starting over" in err
    assert len(log.read_text().splitlines()) == 4

    broken = "".join(lines[:1]) + "{not json\n" + "".join(lines[1:])  # not a kill's doing: refused, kept
    log.write_text(broken)
    rc, _, err = _search(work, capsys, "--no-progress", "--resume", out="cut")
    assert rc == 2 and log.read_text() == broken
    assert err.strip().splitlines() == [f"fairseq-nas: error: {log}: line 2 is not a search row, and 3 rows follow it "
                                        "(a kill cuts only the last line): repair or delete the file, or run "
                                        "without --resume (starts over)"]


@pytest.mark.parametrize("change, flag", [
    ({"limit": "5"}, "--latency-ms 4.5, this run has 5:"),
    ({"ranker": "ranker2"}, "--ranker "),
    ({"space": "pruned.yaml"}, "--space tiny@"),
    ({"extra": ("--strategy", "random")}, "--strategy evolution, this run has random:"),
    ({"extra": ("--max-params", "10000000", "--vocab-size", "100")}, "--max-params (none), this run has 10000000:"),
    ({"extra": ("--tie-break", "speed")}, "--tie-break capacity, this run has speed:"),
])
def test_a_resume_with_other_settings_is_refused_naming_the_field(work, capsys, change, flag):
    rc, _, _ = _search(work, capsys, "--no-progress", out="settings", generations="2")
    assert rc == 0
    log = work / "settings" / "search.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:2]))  # killed after generation 1
    before = {p.name: p.read_bytes() for p in (work / "settings").iterdir()}
    extra = change.pop("extra", ())
    rc, _, err = _search(work, capsys, "--no-progress", "--resume", *extra, out="settings", **change)
    assert rc == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"fairseq-nas: error: --resume: {log} was searched with {flag}"), line
    assert line.endswith("or run without --resume (starts over)")
    assert {p.name: p.read_bytes() for p in (work / "settings").iterdir()} == before  # nothing touched
    rc, _, err = _search(work, capsys, "--no-progress", "--resume", out="settings", generations="2")
    assert rc == 0 and err == ""  # the same settings: it resumes


def test_a_log_of_an_older_version_resumes_with_a_warning(work, capsys):
    rc, _, _ = _search(work, capsys, "--no-progress", out="old")
    log = work / "old" / "search.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    log.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "settings"}) + "\n" for r in rows[:2]))
    rc, _, err = _search(work, capsys, "--no-progress", "--resume", out="old", limit="5")
    assert rc == 0 and "no settings recorded (written by an older version)" in err


def test_a_new_search_removes_the_outputs_of_an_earlier_one(work, capsys):
    out = work / "stale"
    rc, _, _ = _search(work, capsys, "--no-progress", out="stale")
    assert rc == 0 and all((out / n).is_file() for n in ("best.json", "topk.jsonl", "pareto.png", "search.jsonl"))
    (out / "other.txt").write_text("not the search's")
    rc, _, _ = _search(work, capsys, "--no-progress", out="stale", limit="0.01")  # fails: nothing may look done
    assert rc == 3
    assert sorted(p.name for p in out.iterdir()) == ["other.txt", "search.jsonl"]
    assert (out / "search.jsonl").read_text() == ""
    rc, _, _ = _search(work, capsys, "--no-progress", out="stale")
    best = (out / "best.json").read_text()
    rc, _, _ = _search(work, capsys, "--no-progress", "--resume", out="stale")  # finished: resumes to the same
    assert rc == 0 and (out / "best.json").read_text() == best


def test_summary_counts_generations_as_asked_and_progress_is_lines_in_a_log(work, capsys):
    rc, out, err = _search(work, capsys, out="counts", generations="3")
    assert rc == 0
    assert "initial population + 3 generations" in out, out  # --generations 3: 3 bred after the first
    assert "\r" not in err  # stderr is not a terminal: lines, not a bar
    assert [line for line in err.splitlines() if line.startswith("evolution: ")][-1].startswith(
        "evolution: 4/4 populations (100%)"), err
    rc, out, err = _search(work, capsys, "--strategy", "random", "--patience", "2", out="counts")
    rounds = len((work / "counts" / "search.jsonl").read_text().splitlines())
    assert rc == 0 and rounds >= 3
    assert f"{rounds} rounds" in out and f"random: {rounds} rounds" in err, (out, err)
