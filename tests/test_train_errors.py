"""User mistakes inside fairseq's own commands, and a data-bin collect cannot read, are one-line
errors that name the file (issue 14), not tracebacks."""
from __future__ import annotations

from pathlib import Path

from helpers import USER_DIR, run_cli

TRAIN = ["--user-dir", USER_DIR, "--optimizer", "adam", "--lr", "5e-4", "--max-tokens", "1500",
         "--criterion", "label_smoothed_cross_entropy", "--no-progress-bar", "--num-workers", "0",
         "--max-update", "1", "--required-batch-size-multiple", "1"]


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def test_a_missing_search_space_file_is_one_line_in_fairseq_train(demo_data, tmp_path):
    missing = tmp_path / "no-such-space.yaml"
    proc = run_cli("fairseq_cli.train", [str(demo_data), "--save-dir", str(tmp_path / "ck"), *TRAIN,
                                         "--task", "supernet_translation", "--arch", "supernet",
                                         "--search-space", str(missing)], check=False)
    assert proc.returncode != 0
    assert str(missing) in _one_error_line(proc.stderr)


def test_a_missing_subnet_file_is_one_line_in_fairseq_train(demo_data, tmp_path):
    missing = tmp_path / "no-such-subnet.pt"
    proc = run_cli("fairseq_cli.train", [str(demo_data), "--save-dir", str(tmp_path / "ck"), *TRAIN,
                                         "--arch", "nas_subnet", "--subnet", str(missing)], check=False)
    assert proc.returncode != 0
    assert str(missing) in _one_error_line(proc.stderr)


def test_collect_on_a_data_bin_without_a_language_pair_is_one_line(trained_supernet, tmp_path):
    empty: Path = tmp_path / "data-bin"
    empty.mkdir()
    (empty / "dict.de.txt").write_text("hallo 5\n")
    proc = run_cli("fairseq_nas.cli.main", ["collect", str(empty), "--supernet", str(trained_supernet), "-n", "1",
                                            "--cpu", "--out", str(tmp_path / "archs.jsonl"), "--no-progress"],
                   check=False)
    assert proc.returncode != 0
    assert str(empty) in _one_error_line(proc.stderr)
    assert not (tmp_path / "archs.jsonl").exists()


def test_collect_on_a_data_bin_without_the_subset_names_the_missing_files(trained_supernet, demo_data, tmp_path):
    partial: Path = tmp_path / "data-bin"
    partial.mkdir()
    for f in demo_data.iterdir():
        if f.name.startswith(("dict.", "train.")):
            (partial / f.name).write_bytes(f.read_bytes())
    proc = run_cli("fairseq_nas.cli.main", ["collect", str(partial), "--supernet", str(trained_supernet), "-n", "1",
                                            "--cpu", "--out", str(tmp_path / "archs.jsonl"), "--no-progress"],
                   check=False)
    assert proc.returncode != 0
    line = _one_error_line(proc.stderr)
    assert str(partial) in line and "valid." in line and ".idx" in line, line
