"""Shared helpers for tests that run the real fairseq command-line tools."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
USER_DIR = str(REPO / "fairseq_nas")

# Small dims so that real fairseq-train runs take seconds on 2 CPU cores.
TINY_SHRINKNAS = ["--arch", "supernet_shrinknas_iwslt14", "--encoder-embed-choices", "16,32",
                  "--decoder-embed-choices", "16,32", "--encoder-layers-choices", "2",
                  "--decoder-layers-choices", "1,2"]
TINY_HAT = ["--arch", "supernet_hat_iwslt14", "--encoder-embed-choices", "16,32", "--decoder-embed-choices",
            "16,32", "--encoder-ffn-choices", "32,64", "--decoder-ffn-choices", "32,64", "--qkv-dim", "0",
            "--encoder-layers-choices", "2", "--decoder-layers-choices", "1,2"]
TINY_RANKNAS = ["--arch", "supernet_ranknas_iwslt14", "--encoder-embed-choices", "16,32",
                "--decoder-embed-choices", "16,32", "--encoder-ffn-choices", "32,64", "--decoder-ffn-choices",
                "32,64", "--encoder-layers-choices", "2", "--decoder-layers-choices", "1,2"]

# A small custom space (not a shipped one) for supernets trained with --arch supernet --search-space FILE.
TINY_SPACE_YAML = """\
name: tiny_custom
description: "a small custom space for checkpoint tests"
encoder:
  layers: [2]
  embed_dim: [16, 32]
  ffn_ratio: [1, 2]
  heads: [2]
  operator: [self_attention, lightweight_conv]
  activation: [relu, swish]
  rpr_len: [0]
  norm: [pre]
  kernel_size: [3, 5]
decoder:
  layers: [1, 2]
  embed_dim: [16, 32]
  ffn_ratio: [1, 2]
  heads: [2]
  operator: [self_attention, lightweight_conv]
  activation: [relu, swish]
  rpr_len: [0]
  norm: [pre]
  enc_attn_layers: [1, 2]
  kernel_size: [3, 5]
"""

TRAIN_COMMON = ["--user-dir", USER_DIR, "--task", "supernet_translation", "--optimizer", "adam",
                "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "10",
                "--max-tokens", "1500", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
                "--no-progress-bar", "--log-format", "json", "--log-interval", "1",
                "--required-batch-size-multiple", "1", "--num-workers", "0", "--dropout", "0.0"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore", CUDA_VISIBLE_DEVICES="")
    return e


def run_cli(module: str, args: list[str], cwd: Path | None = None, check: bool = True,
            timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env(),
                          cwd=cwd, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def fairseq_train(data: Path, save_dir: Path, args: list[str], **kw) -> subprocess.CompletedProcess:
    return run_cli("fairseq_cli.train", [str(data), "--save-dir", str(save_dir), *TRAIN_COMMON, *args], **kw)


def train_losses(output: str) -> list[float]:
    """Per-update training losses from fairseq's json log lines."""
    losses = []
    for line in output.splitlines():
        i = line.find("{")
        if i < 0 or "train_inner" not in line[:i]:
            continue
        try:
            losses.append(float(json.loads(line[i:])["loss"]))
        except (ValueError, KeyError):
            continue
    return losses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
