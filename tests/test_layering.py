"""DESIGN.md section 2: `space`, `ranking` and `search` work on feature matrices and Subnet
configs; importing any of their modules loads neither fairseq nor torch."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fairseq_nas"
PURE = ("space", "ranking", "search")


def _modules(pkg: str) -> list[str]:
    return [f"fairseq_nas.{pkg}" + ("" if p.stem == "__init__" else f".{p.stem}")
            for p in sorted((PACKAGE / pkg).glob("*.py"))]


@pytest.mark.parametrize("pkg", PURE)
def test_pure_packages_import_neither_fairseq_nor_torch(pkg):
    modules = _modules(pkg)
    assert len(modules) > 2
    code = (f"import sys, importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(','.join(sorted(m for m in ('fairseq', 'torch') if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", f"importing fairseq_nas.{pkg} loads {proc.stdout.strip()}"
