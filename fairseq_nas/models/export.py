"""Export a subnet of a trained supernet as a standalone `nas_subnet` model / checkpoint.

Every shared tensor of the supernet is used through its leading slice (see
`fairseq_nas.modules.basic`), and `nas_subnet` is built from the same classes at exactly
the subnet's dims, so export copies the leading corner of each tensor: the exported model
computes what the supernet computes with that subnet set, and holds nothing else.
"""
from __future__ import annotations

import copy
import pickle
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from fairseq_nas.atomic import atomic_save
from fairseq_nas.errors import FairseqNasError
from fairseq_nas.models.config import EXPORTED_OPTIONS, NasSubnetConfig, check_stored_space
from fairseq_nas.models.subnet import NasSubnetModel
from fairseq_nas.space import Subnet, parse_space

# model options that carry over from the supernet's config to the standalone subnet (and from an
# exported checkpoint to its fine-tuning: NasSubnetModel.build_model reads them back)
SHARED_OPTIONS = EXPORTED_OPTIONS


def subnet_config(supernet_cfg: Any, subnet: Subnet, space_yaml: str) -> NasSubnetConfig:
    get = (lambda k: supernet_cfg.get(k)) if isinstance(supernet_cfg, dict) else (
        lambda k: getattr(supernet_cfg, k, None))
    values = {k: get(k) for k in SHARED_OPTIONS if get(k) is not None}
    return NasSubnetConfig(subnet=subnet.to_json(), space_yaml=space_yaml, **values)


def copy_leading_slices(target: torch.nn.Module, source_state: dict[str, torch.Tensor]) -> None:
    """Fill every tensor of `target` with the leading corner of the same-named source tensor."""
    new_state = {}
    for name, t in target.state_dict().items():
        if name not in source_state:
            raise FairseqNasError(f"export: the supernet has no tensor {name!r} (is it a supernet of this space?)")
        src = source_state[name]
        if src.dim() != t.dim() or any(a > b for a, b in zip(t.shape, src.shape)):
            raise FairseqNasError(f"export: {name} of shape {tuple(t.shape)} does not fit in the supernet's "
                                  f"{tuple(src.shape)}")
        new_state[name] = src[tuple(slice(0, n) for n in t.shape)].clone()
    target.load_state_dict(new_state, strict=True)


def build_subnet_model(cfg: NasSubnetConfig, src_dict, tgt_dict) -> NasSubnetModel:
    task = SimpleNamespace(source_dictionary=src_dict, target_dictionary=tgt_dict, cfg=SimpleNamespace(subnet=None))
    return NasSubnetModel.build_model(cfg, task)


def export_model(supernet, subnet: Subnet) -> NasSubnetModel:
    """In memory: the standalone model of `subnet` with the supernet's weights."""
    supernet.space.validate_subnet(subnet, source="subnet")
    cfg = subnet_config(supernet.cfg, subnet, supernet.space.to_yaml())
    model = build_subnet_model(cfg, supernet.encoder.dictionary, supernet.decoder.dictionary)
    copy_leading_slices(model, supernet.state_dict())
    return model.train(supernet.training)


class _SizedDictionary:
    """Just enough of a fairseq Dictionary to build a model: its size and padding index."""

    def __init__(self, size: int, pad: int):
        self._size, self._pad = size, pad

    def __len__(self) -> int:
        return self._size

    def pad(self) -> int:
        return self._pad

    def __eq__(self, other) -> bool:
        return isinstance(other, _SizedDictionary) and (self._size, self._pad) == (other._size, other._pad)

    def __hash__(self) -> int:
        return hash((self._size, self._pad))


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """torch.load(weights_only=True) of a fairseq checkpoint, or a one-line error that says what
    the file is (never torch's advice to turn the weights_only check off)."""
    p = Path(path)
    if not p.is_file():
        raise FairseqNasError(f"{p}: no such checkpoint file")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found:
            raise FairseqNasError(f"{p}: holds a {found.group(1)} object, which is not among the fairseq types "
                                  "fairseq-nas loads (checkpoints are pickles, so they are only read with "
                                  "torch.load(weights_only=True))") from None
        raise FairseqNasError(f"{p}: not a fairseq checkpoint (not a readable torch file)") from None
    except Exception as e:  # a text file, a truncated or foreign zip, ...
        raise FairseqNasError(f"{p}: not a fairseq checkpoint (not a readable torch file: "
                              f"{type(e).__name__})") from None
    if not isinstance(state, dict) or "model" not in state or "cfg" not in state:
        raise FairseqNasError(f"{p}: not a fairseq checkpoint (a torch file without fairseq's 'model' and 'cfg')")
    return state


def load_supernet_checkpoint(path: str | Path) -> dict:
    """A supernet checkpoint (loaded with weights_only=True), or a one-line error."""
    p = Path(path)
    if not p.is_file():
        raise FairseqNasError(f"{p}: no such checkpoint file")
    state = read_checkpoint(p)
    model_cfg = (state.get("cfg") or {}).get("model") if isinstance(state, dict) else None
    if isinstance(model_cfg, dict):
        name = str(model_cfg.get("_name") or model_cfg.get("arch") or "")
    else:  # a legacy fairseq model (e.g. transformer) stores an argparse.Namespace
        name = str(getattr(model_cfg, "arch", None) or getattr(model_cfg, "_name", None) or "")
    if not isinstance(model_cfg, dict) or not _space_yaml(state) or not name.startswith("supernet"):
        raise FairseqNasError(f"{p}: cfg.model: not a fairseq-nas supernet checkpoint (arch {name!r}); expected "
                              "one written by fairseq-train --arch supernet or supernet_*")
    extra = (state.get("model") or {}).get("_extra_state")
    if model_cfg.get("space_yaml") and isinstance(extra, dict) and extra.get("space_yaml"):
        check_stored_space(parse_space(model_cfg["space_yaml"], source=f"{p}: cfg.model.space_yaml"),
                           extra["space_yaml"], checkpoint=str(p))
    return state


def _space_yaml(state: dict) -> str:
    extra = (state.get("model") or {}).get("_extra_state")
    from_extra = extra.get("space_yaml") if isinstance(extra, dict) else None
    return (state.get("cfg") or {}).get("model", {}).get("space_yaml") or from_extra or ""


def supernet_from_checkpoint(state: dict):
    """(space, model cfg dict) of a loaded supernet checkpoint."""
    cfg = dict(state["cfg"]["model"])
    cfg["space_yaml"] = _space_yaml(state)
    space = parse_space(cfg["space_yaml"], source="checkpoint space")
    return space, cfg


def export_checkpoint(supernet_path: str | Path, subnet: Subnet, out_path: str | Path,
                      subnet_source: str = "subnet") -> NasSubnetModel:
    """Write `out_path`: a normal fairseq checkpoint of arch nas_subnet holding the subnet's weights."""
    state = load_supernet_checkpoint(supernet_path)
    space, sup_cfg = supernet_from_checkpoint(state)
    space.validate_subnet(subnet, source=subnet_source)
    weights = state["model"]
    enc_emb, dec_emb = weights["encoder.embed_tokens.weight"], weights["decoder.embed_tokens.weight"]
    pad = int(state["cfg"]["task"].get("pad", 1) or 1) if isinstance(state["cfg"].get("task"), dict) else 1
    src_dict = _SizedDictionary(enc_emb.size(0), pad)
    tgt_dict = src_dict if sup_cfg.get("share_all_embeddings") else _SizedDictionary(dec_emb.size(0), pad)
    cfg = subnet_config(sup_cfg, subnet, space.to_yaml())
    model = build_subnet_model(cfg, src_dict, tgt_dict)
    copy_leading_slices(model, weights)

    out = copy.copy(state)
    full_cfg = copy.deepcopy(state["cfg"])
    model_cfg = {k: v for k, v in sup_cfg.items() if k in SHARED_OPTIONS}
    model_cfg.update(_name="nas_subnet", arch="nas_subnet", subnet=subnet.to_json(), space_yaml=space.to_yaml())
    full_cfg["model"] = model_cfg
    task_cfg = dict(full_cfg.get("task") or {})
    for k in ("subnet", "sampler", "valid_subnets", "subnet_log", "seed"):
        task_cfg.pop(k, None)
    task_cfg["_name"] = "translation"
    full_cfg["task"] = task_cfg
    out.update(cfg=full_cfg, model=model.state_dict(), last_optimizer_state=None)
    hist = state.get("optimizer_history") or []
    out["optimizer_history"] = hist[-1:] if hist else []
    out["extra_state"] = {k: v for k, v in (state.get("extra_state") or {}).items() if k != "train_iterator"}
    out["extra_state"]["exported_from"] = {"supernet": str(supernet_path), "subnet": subnet.to_dict()}
    atomic_save(out_path, lambda tmp: torch.save(out, tmp))
    return model
