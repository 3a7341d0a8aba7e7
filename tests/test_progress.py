"""Progress: a bar on a terminal, plain periodic lines in a log or a pipe, nothing when disabled;
and a real `fairseq-nas latency` run with stderr redirected to a file."""
from __future__ import annotations

import io
import subprocess
import sys

from fairseq_nas.progress import Progress
from helpers import REPO, env


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_prints_a_line_every_tenth_and_no_carriage_returns():
    out = io.StringIO()
    with Progress("collect", total=40, unit="subnet", file=out) as bar:
        for _ in range(40):
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == [f"collect: {n}/40 subnets ({n * 100 // 40}%)" for n in range(4, 41, 4)]


def test_resumed_start_postfix_and_a_last_line_on_close():
    out = io.StringIO()
    bar = Progress("latency", total=30, unit="round", initial=10, file=out)
    for _ in range(4):
        bar.update(1)
    bar.set_postfix(ms="1.50")
    bar.update(1)
    bar.close()
    assert out.getvalue().splitlines() == ["latency: 12/30 rounds (40%)", "latency: 15/30 rounds (50%) ms=1.50"]


def test_total_grows_and_unknown_total_prints_each_update():
    out = io.StringIO()
    bar = Progress("measuring top K", total=2, unit="round", file=out)
    bar.update(2)
    bar.add_total(2)
    bar.update(2)
    bar.close()
    assert out.getvalue().splitlines()[-1] == "measuring top K: 4/4 rounds (100%)"
    out = io.StringIO()
    with Progress("random", unit="round", file=out) as bar:
        bar.update(1)
        bar.update(1)
    assert out.getvalue().splitlines() == ["random: 1 rounds", "random: 2 rounds"]


def test_disabled_prints_nothing_and_close_without_leave_drops_the_last_line():
    out = io.StringIO()
    with Progress("x", total=5, file=out, disable=True) as bar:
        bar.update(5)
    bar = Progress("x", total=100, file=out)
    bar.update(3)  # below the first tenth: no line yet
    bar.close(leave=False)
    assert out.getvalue() == ""


def test_a_terminal_gets_the_bar():
    out = Terminal()
    with Progress("collect", total=3, unit="subnet", file=out) as bar:
        bar.update(3)
    assert "\r" in out.getvalue() and "3/3" in out.getvalue()


def test_latency_with_stderr_in_a_file_logs_lines_not_bars(tmp_path):
    space = tmp_path / "tiny.yaml"
    space.write_text("name: tiny\nencoder: {layers: [1], embed_dim: [16], ffn_dim: [16, 32], heads: [2]}\n"
                     "decoder: {layers: [1], embed_dim: [16], ffn_dim: [16, 32], heads: [2]}\n")
    base = [sys.executable, "-m", "fairseq_nas.cli.main", "latency", "--space", str(space), "-n", "2",
            "--runs", "3", "--rounds", "3", "--warmup", "1", "--src-len", "4", "--beam", "1",
            "--vocab-size", "30", "--threads", "1"]
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:
        proc = subprocess.run([*base, "--out", str(tmp_path / "a.jsonl")], env=env(), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=err, text=True, timeout=300)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "\r" not in text
    lines = [line for line in text.splitlines() if line.startswith("latency: ") and " rounds (" in line]
    assert lines and lines[-1].startswith("latency: 6/6 rounds (100%)"), text  # 2 subnets x 3 rounds
    with open(log, "w") as err:
        proc = subprocess.run([*base, "--out", str(tmp_path / "b.jsonl"), "--no-progress"], env=env(), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=err, text=True, timeout=300)
    assert proc.returncode == 0 and " rounds (" not in log.read_text()
