"""fairseq-nas collect: inherited-weight losses of sampled subnets, resumable rows, iterative selection."""
from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time

import pytest

from fairseq_nas.cli.main import main
from fairseq_nas.collect.rows import RowWriter, read_rows, space_sidecar
from fairseq_nas.collect.runner import sample_distinct
from fairseq_nas.space import Subnet, load_space
from helpers import env, read_jsonl


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """In-process evaluation with one thread: on a busy 2-core machine, waiting OpenMP threads cost more
    than they give on these tiny models (subprocesses get OMP_NUM_THREADS=1 from helpers.env)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _supernet_space(ckpt):
    from fairseq_nas.models.export import load_supernet_checkpoint, supernet_from_checkpoint

    return supernet_from_checkpoint(load_supernet_checkpoint(ckpt))[0]


def _keys(rows) -> list[str]:
    return [Subnet.from_dict(r["subnet"]).key() for r in rows]


def test_collect_writes_rows_resumes_and_shards(trained_supernet, demo_data, tmp_path, capsys):
    out = tmp_path / "archs.jsonl"
    common = ["collect", str(demo_data), "--supernet", str(trained_supernet), "--seed", "3",
              "--eval-sentences", "30", "--no-progress", "--cpu"]
    assert main([*common, "-n", "6", "--out", str(out)]) == 0
    rows = read_jsonl(out)
    assert len(rows) == 6 and sorted(r["index"] for r in rows) == list(range(6))
    assert len(set(_keys(rows))) == 6
    space = _supernet_space(trained_supernet)
    assert _keys(rows) == [s.key() for s in sample_distinct(space, 6, 3)]
    for r in rows:
        assert math.isfinite(r["valid_loss"]) and math.isfinite(r["valid_nll_loss"])
        assert r["valid_loss"] > r["valid_nll_loss"] > 0  # label smoothing 0.1 adds to the NLL
        assert r["n_sentences"] == 30 and r["n_tokens"] > 30 and r["subset"] == "valid" and r["seed"] == 3
        assert r["params"] > 0 and "bleu" not in r and "round" not in r
    assert len({r["params"] for r in rows}) > 1
    # the space is written beside the rows, and it is the checkpoint's
    assert load_space(str(space_sidecar(out))) == space
    assert "collect: 6/6 subnets" in capsys.readouterr().out

    # same command again: nothing new
    assert main([*common, "-n", "6", "--out", str(out)]) == 0
    assert len(read_jsonl(out)) == 6
    assert "0 evaluated now, 6 from an earlier run" in capsys.readouterr().out

    # two shards cover the same 6 subnets, with the same losses (fixed subset, eval mode)
    shard_rows = []
    for i in range(2):
        part = tmp_path / f"shard{i}.jsonl"
        assert main([*common, "-n", "6", "--out", str(part), "--shard", f"{i}/2"]) == 0
        got = read_jsonl(part)
        assert sorted(r["index"] for r in got) == list(range(i, 6, 2))
        shard_rows += got
    by_key = {k: r["valid_loss"] for k, r in zip(_keys(rows), rows)}
    assert {k: r["valid_loss"] for k, r in zip(_keys(shard_rows), shard_rows)} == pytest.approx(by_key)


def test_collect_kill_and_resume_has_no_duplicates(trained_supernet, demo_data, tmp_path, capsys):
    out = tmp_path / "archs.jsonl"
    n = 5
    cmd = [sys.executable, "-m", "fairseq_nas.cli.main", "collect", str(demo_data), "--supernet",
           str(trained_supernet), "-n", str(n), "--out", str(out), "--subset", "train",
           "--eval-sentences", "200", "--no-progress", "--cpu", "--seed", "5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_text().count("\n") >= 2:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "collect finished before it could be killed"
    done = out.read_text().count("\n")
    assert 2 <= done < n
    with open(out, "a") as f:  # what a kill in the middle of a write would leave
        f.write('{"index": 99, "subnet": {"enc')
    assert len(read_rows(out)[0]) == done and read_rows(out)[1]

    assert main(cmd[3:]) == 0  # resume (in this process: saves a start-up)
    assert f"{n - done} evaluated now, {done} from an earlier run" in capsys.readouterr().out
    rows = read_jsonl(out)
    assert len(rows) == n and len(set(_keys(rows))) == n
    assert sorted(r["index"] for r in rows) == list(range(n))


def test_iterative_strategy_spends_exactly_its_budget(trained_supernet, demo_data, tmp_path, capsys):
    out = tmp_path / "iter.jsonl"
    argv = ["collect", str(demo_data), "--supernet", str(trained_supernet), "-n", "7", "--out", str(out),
            "--strategy", "iterative", "--rounds", "3", "--pool-size", "30", "--seed", "2",
            "--eval-sentences", "20", "--no-progress", "--cpu"]
    assert main(argv) == 0
    rows = read_jsonl(out)
    assert len(rows) == 7 and len(set(_keys(rows))) == 7
    assert [r["round"] for r in rows] == [1, 1, 1, 2, 2, 3, 3]  # 7 over 3 rounds: 3, 2, 2
    pool = [s.key() for s in sample_distinct(_supernet_space(trained_supernet), 30, 2)]
    assert all(pool[r["index"]] == k for r, k in zip(rows, _keys(rows)))
    assert "iterative selection: 7 of a pool of 30" in capsys.readouterr().out
    # resuming retraces the same choices: nothing new
    assert main(argv) == 0
    assert len(read_jsonl(out)) == 7


def test_collect_rejects_a_space_the_supernet_does_not_hold(trained_supernet, demo_data, tmp_path, capsys):
    argv = ["collect", str(demo_data), "--supernet", str(trained_supernet), "-n", "3", "--out",
            str(tmp_path / "a.jsonl"), "--space", "shrinknas_iwslt14"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith("fairseq-nas: error: subnet 0 of space shrinknas_iwslt14") and "supernet" in err
    assert not (tmp_path / "a.jsonl").exists()


def test_collect_bleu_on_a_token_budget(trained_supernet, demo_data, tmp_path):
    out = tmp_path / "b.jsonl"
    assert main(["collect", str(demo_data), "--supernet", str(trained_supernet), "-n", "2", "--out", str(out),
                 "--eval-tokens", "80", "--bleu", "--no-progress", "--cpu"]) == 0
    rows = read_jsonl(out)
    assert len(rows) == 2 and all(0.0 <= r["bleu"] <= 100.0 for r in rows)
    assert rows[0]["n_tokens"] <= 80 and rows[0]["n_sentences"] < 40


def test_row_writer_cuts_a_partial_line_and_keeps_a_complete_one(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b"')
    rows, truncated = read_rows(p)
    assert [r["a"] for _, r in rows] == [1, 2] and truncated
    with RowWriter(p, fsync=False) as w:
        w.write({"a": 4})
    assert [r["a"] for r in read_jsonl(p)] == [1, 2, 4]
    p.write_text('{"a": 1}\n{"a": 2}')  # complete row, newline missing
    with RowWriter(p, fsync=False) as w:
        w.write({"a": 3})
    assert [r["a"] for r in read_jsonl(p)] == [1, 2, 3]
    p.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(Exception, match=r"r.jsonl:2: not valid JSON"):
        read_rows(p)


def test_collect_keeps_the_settings_of_existing_rows(trained_supernet, demo_data, tmp_path, capsys):
    out = tmp_path / "a.jsonl"
    out.write_text(json.dumps({"index": 0, "subnet": _supernet_space(trained_supernet).largest().to_dict(),
                               "valid_loss": 1.0, "subset": "test", "n_sentences": 10, "seed": 0,
                               "strategy": "random"}) + "\n")
    argv = ["collect", str(demo_data), "--supernet", str(trained_supernet), "-n", "2", "--out", str(out),
            "--eval-sentences", "10", "--no-progress", "--cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fairseq-nas: error: {out}:1: subset:") and "\n" not in err


@pytest.mark.parametrize("old, new", [("--max-sentences-eval", "--eval-sentences M"),
                                      ("--batch-tokens", "--max-tokens T (tokens per batch, as in fairseq)")])
def test_collect_names_the_new_option_for_a_renamed_one(tmp_path, capsys, old, new):
    rc = main(["collect", str(tmp_path), "--supernet", str(tmp_path / "none.pt"), "-n", "2",
               "--out", str(tmp_path / "a.jsonl"), old, "10", "--cpu"])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and line.startswith(f"fairseq-nas: error: {old} was renamed: use {new}"), line
