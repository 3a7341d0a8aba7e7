"""`fairseq-nas space ...`: in process through `main(argv)`, and as a real process."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fairseq_nas.cli.main import SUBCOMMANDS, main
from fairseq_nas.space import Subnet, load_space

REPO = Path(__file__).resolve().parent.parent

# Runs `python -m fairseq_nas.cli.main ARGS` with the package __init__ (which imports fairseq
# to register its modules, several seconds) bypassed: the CLI code path is the same.
_LIGHT_MAIN = (
    "import runpy, sys, types\n"
    f"pkg = types.ModuleType('fairseq_nas'); pkg.__path__ = [{str(REPO / 'fairseq_nas')!r}]\n"
    "sys.modules['fairseq_nas'] = pkg\n"
    "runpy.run_module('fairseq_nas.cli.main', run_name='__main__', alter_sys=True)\n"
)


def run_cli(*args: str, light: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", _LIGHT_MAIN] if light else [sys.executable, "-m", "fairseq_nas.cli.main"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=120, cwd=REPO)


def test_subcommand_registry_is_a_list_of_lines():
    assert ("space", "fairseq_nas.cli.space_cmd") in [(n, m) for n, m, _ in SUBCOMMANDS]


def test_show(capsys):
    assert main(["space", "show", "supernet_shrinknas_iwslt14"]) == 0
    out = capsys.readouterr().out
    assert "search space shrinknas_iwslt14" in out
    assert "lsra_dynamic" in out and "enc_attn_layers" in out
    assert str(load_space("shrinknas_iwslt14").num_subnets()) in out


def test_list(capsys):
    assert main(["space", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["space", "subnets"]
    assert [ln.split()[0] for ln in lines[1:]] == ["hat_iwslt14", "hat_wmt14", "ranknas_iwslt14",
                                                  "ranknas_wmt14", "shrinknas_iwslt14"]


def test_sample_in_process(capsys):
    assert main(["space", "sample", "ranknas_iwslt14", "-n", "3", "--seed", "2"]) == 0
    first = capsys.readouterr().out
    assert main(["space", "sample", "ranknas_iwslt14", "-n", "3", "--seed", "3"]) == 0
    assert capsys.readouterr().out != first
    assert main(["space", "sample", "ranknas_iwslt14", "--largest"]) == 0
    assert Subnet.from_json(capsys.readouterr().out) == load_space("ranknas_iwslt14").largest()


def test_sample_is_reproducible_json_lines():
    runs = [run_cli("space", "sample", "shrinknas_iwslt14", "-n", "5", "--seed", "1") for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    assert runs[0].stdout == runs[1].stdout
    lines = runs[0].stdout.splitlines()
    space = load_space("shrinknas_iwslt14")
    assert len(lines) == 5 and len(set(lines)) == 5
    for line in lines:
        sub = Subnet.from_json(line)
        space.validate_subnet(sub)
        assert sub.to_json() == line  # canonical form


def test_validate(tmp_path, capsys):
    space = load_space("hat_iwslt14")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(space.largest().to_dict(), indent=2))
    assert main(["space", "validate", "hat_iwslt14", str(good)]) == 0
    assert capsys.readouterr().out.strip() == "ok"

    many = tmp_path / "many.jsonl"
    many.write_text(space.largest().to_json() + "\n" + load_space("hat_wmt14").largest().to_json() + "\n")
    assert main(["space", "validate", "hat_iwslt14", str(many)]) == 2
    err = capsys.readouterr().err
    assert err == (f"fairseq-nas: error: {many}:2: encoder.layers[0].ffn_dim: ffn_dim 3072 is not allowed "
                   "with embed_dim 640 in space hat_iwslt14; valid: 512, 1024, 2048\n")


def test_error_is_one_line_in_process(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nencoder:\n  layers: [6]\n  embed_dim: [512]\n  ffn_dim: [1024]\n  heads: [3]\n"
                   "decoder:\n  layers: [1]\n  embed_dim: [512]\n  ffn_dim: [1024]\n  heads: [2]\n")
    assert main(["space", "show", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"fairseq-nas: error: {bad}: encoder.heads: 3 does not divide 512")


def test_bad_file_exits_2_with_one_line():
    bad = "tests/does_not_exist.yaml"
    r = run_cli("space", "show", bad)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        f"fairseq-nas: error: {bad}: <file>: no such space file (expected a YAML search space or a builtin "
        "name: "
        "hat_iwslt14, hat_wmt14, ranknas_iwslt14, ranknas_wmt14, shrinknas_iwslt14)"]


def test_real_entry_point_bad_file(tmp_path):
    """The real `python -m fairseq_nas.cli.main`, package __init__ included."""
    bad = tmp_path / "broken.yaml"
    bad.write_text("encoder: [1, 2\n")
    r = run_cli("space", "show", str(bad), light=False)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fairseq-nas: error: {bad}: line 2: malformed YAML")
    assert "Traceback" not in r.stderr


def test_user_dir_prints_the_plugin_folder_from_any_directory(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([sys.executable, "-m", "fairseq_nas.cli.main", "user-dir"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = Path(proc.stdout.strip())
    assert printed.is_absolute() and (printed / "__init__.py").is_file() and printed.name == "fairseq_nas"
    assert printed == Path(__file__).resolve().parents[1] / "fairseq_nas"
