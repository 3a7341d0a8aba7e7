"""Latency of trained fairseq checkpoints, any architecture (a fairseq `transformer`, an exported or
fine-tuned `nas_subnet`), under the same protocol and in the same rounds as subnets are measured.

This is how a found model and the baseline it must beat are compared: both trained models are
loaded as fairseq loads them for `fairseq-generate`, and timed together, interleaved round by
round, so neither is favoured by when it ran. Latency depends on shapes, not values, so the trained
weights change nothing but honesty: what is timed is exactly the model that is scored.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from fairseq_nas.errors import FairseqNasError
from fairseq_nas.latency.measure import Protocol, device_name, library_versions, measure_many


def _model_cfg(state: dict) -> dict[str, Any]:
    cfg = state["cfg"]["model"]
    return vars(cfg) if isinstance(cfg, argparse.Namespace) else dict(cfg)


def load_trained(path: str | Path, data: str | Path):
    """The model of fairseq checkpoint `path`, built as fairseq-generate builds it (dictionaries from
    the data-bin `data`), in eval mode on the CPU. Loaded with weights_only=True."""
    import fairseq_nas

    fairseq_nas.register()
    from fairseq import checkpoint_utils

    from fairseq_nas.models.export import read_checkpoint

    read_checkpoint(path)  # a one-line error for a missing or foreign file, before fairseq's traceback
    if not any(Path(data).glob("dict.*.txt")):
        raise FairseqNasError(f"--dict {data}: no dict.*.txt (a fairseq data-bin)")
    models, _ = checkpoint_utils.load_model_ensemble([str(path)], arg_overrides={"data": str(data)})
    return models[0].eval()


def checkpoint_fields(path: str | Path, model, protocol: Protocol) -> dict[str, Any]:
    """What a trained model's row records besides its timings."""
    from fairseq_nas.models.export import read_checkpoint

    cfg = _model_cfg(read_checkpoint(path))
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    row: dict[str, Any] = dict(checkpoint=str(path), arch=cfg.get("arch") or cfg.get("_name"), params=int(params))
    if cfg.get("subnet"):
        import json

        row["subnet"] = json.loads(cfg["subnet"])
    row.update(runs=protocol.runs, warmup=protocol.warmup, trim=protocol.trim,
               **{k: v for k, v in protocol.settings().items() if k != "runs"},
               device_name=device_name(protocol.device), **library_versions(),
               src_vocab=len(model.encoder.dictionary), tgt_vocab=len(model.decoder.dictionary))
    return row


def measure_checkpoints(paths: Sequence[str | Path], data: str | Path, protocol: Optional[Protocol] = None,
                        progress: Optional[Callable[[], None]] = None, meter=None) -> list[dict[str, Any]]:
    """One row per checkpoint (in order): latency_ms and its statistics as `measure.measure` gives
    them, plus checkpoint, arch, params (unique parameters, shared embeddings counted once) and,
    for a nas_subnet, its subnet. All models are measured together in the protocol's rounds."""
    protocol = protocol or Protocol()
    if not paths:
        raise FairseqNasError("--checkpoints: give at least one checkpoint")
    keys = list(range(len(paths)))
    models = {k: load_trained(paths[k], data) for k in keys}
    fields = {k: checkpoint_fields(paths[k], models[k], protocol) for k in keys}
    rows = measure_many([(k, None) for k in keys], None, 0, 0, protocol, progress=progress, meter=meter,
                        build_model=lambda k: models.pop(k), fields_of=lambda k: fields[k])
    out = []
    for k in keys:
        row = rows[k]
        subnet = row.pop("subnet", None)
        out.append({**({"subnet": subnet} if subnet else {}), **row})
    return out
