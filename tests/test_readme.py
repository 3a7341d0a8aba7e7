"""The README's examples work when pasted: its custom-space YAML is a valid space, and its
`fairseq-nas space ...` commands that need no files of their own run."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_nas.space import parse_space

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_the_custom_space_example_is_a_valid_space():
    yaml_blocks = [b for b in _blocks("yaml") if "encoder:" in b and "decoder:" in b]
    assert yaml_blocks, "README has no custom-space example"
    space = parse_space(yaml_blocks[0], source="README.md custom space")
    assert space.num_subnets() > 1


def _space_commands() -> list[str]:
    out = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            cmd = line.split("#")[0].strip()
            if cmd.startswith("fairseq-nas space ") and " validate " not in cmd:
                out.append(cmd)
    return out


@pytest.mark.parametrize("cmd", _space_commands())
def test_readme_space_commands_run(cmd):
    args = shlex.split(cmd)[1:]
    proc = subprocess.run([sys.executable, "-m", "fairseq_nas.cli.main", *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip()


def _all_commands(tool: str) -> list[str]:
    """Every `tool ...` command of the README's bash blocks, continuation lines joined, comments cut."""
    out = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            cmd = line.split(" #")[0].strip()
            if cmd.startswith(tool + " "):
                out.append(cmd)
    return out


@pytest.mark.parametrize("cmd", _all_commands("fairseq-nas"))
def test_every_readme_fairseq_nas_command_parses(cmd):
    """The real parsers accept every option the README shows (an option that does not exist fails)."""
    from fairseq_nas.cli.main import build_parser

    argv = [a for a in shlex.split(cmd)[1:] if not (a.startswith("[") or a.endswith("]"))]
    args = build_parser(argv).parse_args(argv)
    assert callable(getattr(args, "func", None)), cmd


def test_the_readme_shows_the_pipeline_commands():
    names = {shlex.split(c)[1] for c in _all_commands("fairseq-nas")}
    assert {"space", "latency", "collect", "rank", "search", "export", "bleu"} <= names
