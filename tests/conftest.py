"""Session fixtures: the generated demo corpus, binarised once for all tests."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers import REPO, env


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """A tiny generated corpus in fairseq's binary format (DIR/data-bin)."""
    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run(["bash", str(REPO / "data-prep" / "prepare-demo.sh"), str(out), "--train", "600",
                           "--valid", "40", "--test", "40", "--seed", "7"],
                          capture_output=True, text=True, env=env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out / "data-bin"
