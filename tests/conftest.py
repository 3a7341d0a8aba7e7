"""Session fixtures: the generated demo corpus, binarised once for all tests."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers import REPO, env


@pytest.fixture
def one_thread():
    """One torch thread in this process: on a shared 2-core machine two spinning threads can be
    20x slower. Modules that time or count compute use it with `pytestmark`."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """A tiny generated corpus in fairseq's binary format (DIR/data-bin)."""
    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run(["bash", str(REPO / "data-prep" / "prepare-demo.sh"), str(out), "--train", "600",
                           "--valid", "40", "--test", "40", "--seed", "7"],
                          capture_output=True, text=True, env=env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out / "data-bin"


@pytest.fixture(scope="session")
def trained_supernet(demo_data, tmp_path_factory) -> Path:
    """A briefly trained tiny ShrinkNAS supernet checkpoint (shared by export/generate/fine-tune tests)."""
    from helpers import TINY_SHRINKNAS, fairseq_train

    save = tmp_path_factory.mktemp("supernet")
    fairseq_train(demo_data, save, TINY_SHRINKNAS + ["--max-update", "40", "--no-epoch-checkpoints",
                                                      "--seed", "11"])
    return save / "checkpoint_last.pt"


@pytest.fixture(scope="session")
def custom_space_supernet(demo_data, tmp_path_factory) -> Path:
    """A tiny supernet trained from a custom space given by a *relative* --search-space path, with
    --share-all-embeddings (the demo dictionary is joined); the YAML is deleted afterwards."""
    from helpers import TINY_SPACE_YAML, fairseq_train

    work = tmp_path_factory.mktemp("custom_space")
    (work / "tiny.yaml").write_text(TINY_SPACE_YAML)
    fairseq_train(demo_data, work / "ck", ["--arch", "supernet", "--search-space", "tiny.yaml",
                                           "--share-all-embeddings", "--max-update", "6", "--no-epoch-checkpoints",
                                           "--seed", "5"], cwd=work)
    (work / "tiny.yaml").unlink()
    return work / "ck" / "checkpoint_last.pt"
