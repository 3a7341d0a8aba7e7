"""fairseq-train with the plugin prints none of hydra's deprecation notices (about 25 lines
at every start), while other warnings still show."""
from __future__ import annotations

import subprocess
import sys

from helpers import TINY_SHRINKNAS, TRAIN_COMMON, env


def test_fairseq_train_start_shows_no_hydra_deprecation_warnings(demo_data, tmp_path):
    e = env()
    e.pop("PYTHONWARNINGS")  # the other tests silence every warning; this one looks at them
    cmd = [sys.executable, "-m", "fairseq_cli.train", str(demo_data),
           "--save-dir", str(tmp_path), *TRAIN_COMMON, *TINY_SHRINKNAS, "--max-update", "1", "--no-save",
           "--disable-validation", "--cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    noise = [line for line in proc.stderr.splitlines()
             if "hydra" in line.lower() or "version_base" in line or "ConfigStore" in line]
    assert not noise, "\n".join(noise)
    # the filter is narrow: a warning of another origin still reaches stderr
    check = subprocess.run([sys.executable, "-c", "import warnings, fairseq, fairseq_nas; "
                            "warnings.warn('other origin', UserWarning)"], capture_output=True, text=True, env=e)
    assert "other origin" in check.stderr
