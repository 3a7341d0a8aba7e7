"""Shared set-up for benchmarks: data, fairseq models built through fairseq's own parser."""
from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
USER_DIR = str(REPO / "fairseq_nas")


def ensure_demo_data(out: Path, train: int = 4000) -> Path:
    """Generate (once) the demo corpus and return its data-bin."""
    subprocess.run(["bash", str(REPO / "data-prep" / "prepare-demo.sh"), str(out), "--train", str(train),
                    "--valid", "200", "--test", "200"], check=True, stdout=subprocess.DEVNULL)
    return out / "data-bin"


def build_from_args(argv: list[str]):
    """(cfg, task, model, criterion) exactly as fairseq-train would build them."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, argv)
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return cfg, task, model, criterion


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def python() -> str:
    return sys.executable
