"""A Subnet: one fully specified architecture, serialised as JSON.

```json
{"encoder": {"embed_dim": 320, "layers": [{"operator": "self_attention", "ffn_dim": 640,
  "heads": 4, "activation": "relu", "rpr_len": 0, "norm": "pre"}, ...]},
 "decoder": {"embed_dim": 320, "layers": [{..., "enc_attn_layers": 2}, ...]}}
```
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from fairseq_nas.errors import SpaceError

OPERATORS = ("self_attention", "lightweight_conv", "dynamic_conv", "lsra_lightweight", "lsra_dynamic")
ACTIVATIONS = ("relu", "leaky_relu", "swish")
NORMS = ("pre", "post")
ATTENTION_OPERATORS = ("self_attention", "lsra_lightweight", "lsra_dynamic")
CONV_OPERATORS = ("lightweight_conv", "dynamic_conv", "lsra_lightweight", "lsra_dynamic")
LAYER_FIELDS = ("operator", "ffn_dim", "heads", "activation", "rpr_len", "norm", "enc_attn_layers")


@dataclass(frozen=True)
class LayerConfig:
    operator: str
    ffn_dim: int
    heads: int
    activation: str
    rpr_len: int = 0  # 0: no relative position representations
    norm: str = "post"
    enc_attn_layers: Optional[int] = None  # decoder only: attend to the last k encoder layers

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["enc_attn_layers"] is None:
            del d["enc_attn_layers"]
        return d


@dataclass(frozen=True)
class StackConfig:
    embed_dim: int
    layers: tuple[LayerConfig, ...] = field(default_factory=tuple)

    @property
    def depth(self) -> int:
        return len(self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {"embed_dim": self.embed_dim, "layers": [lay.to_dict() for lay in self.layers]}


@dataclass(frozen=True)
class Subnet:
    encoder: StackConfig
    decoder: StackConfig

    def stack(self, name: str) -> StackConfig:
        return self.encoder if name == "encoder" else self.decoder

    def with_stack(self, name: str, stack: StackConfig) -> Subnet:
        return replace(self, **{name: stack})

    def to_dict(self) -> dict[str, Any]:
        return {"encoder": self.encoder.to_dict(), "decoder": self.decoder.to_dict()}

    def to_json(self) -> str:
        """Canonical one-line JSON; equal subnets give equal strings (usable as a key)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def key(self) -> str:
        return self.to_json()

    @classmethod
    def from_dict(cls, d: Any, source: str = "subnet") -> Subnet:
        """Structural parsing only; `SearchSpace.validate_subnet` checks the values."""
        if not isinstance(d, dict):
            raise SpaceError(source, "<root>", "expected a JSON object with 'encoder' and 'decoder'")
        stacks = {}
        for name in ("encoder", "decoder"):
            s = d.get(name)
            if not isinstance(s, dict):
                raise SpaceError(source, name, "missing or not an object with 'embed_dim' and 'layers'")
            emb = s.get("embed_dim")
            if not isinstance(emb, int) or isinstance(emb, bool):
                raise SpaceError(source, f"{name}.embed_dim", f"expected an integer, got {emb!r}")
            layers = s.get("layers")
            if not isinstance(layers, list) or not layers:
                raise SpaceError(source, f"{name}.layers", "expected a non-empty list of layer objects")
            parsed = []
            for i, lay in enumerate(layers):
                where = f"{name}.layers[{i}]"
                if not isinstance(lay, dict):
                    raise SpaceError(source, where, "expected an object")
                unknown = set(lay) - set(LAYER_FIELDS)
                if unknown:
                    raise SpaceError(source, f"{where}.{sorted(unknown)[0]}",
                                     f"unknown field; valid fields: {', '.join(LAYER_FIELDS)}")
                for req in ("operator", "ffn_dim", "heads", "activation"):
                    if req not in lay:
                        raise SpaceError(source, f"{where}.{req}", "missing")
                for intf in ("ffn_dim", "heads", "rpr_len", "enc_attn_layers"):
                    v = lay.get(intf)
                    if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                        raise SpaceError(source, f"{where}.{intf}", f"expected an integer, got {v!r}")
                if name == "decoder" and lay.get("enc_attn_layers") is None:
                    raise SpaceError(source, f"{where}.enc_attn_layers", "missing: decoder layers name "
                                     "how many last encoder layers they attend to")
                if name == "encoder" and lay.get("enc_attn_layers") is not None:
                    raise SpaceError(source, f"{where}.enc_attn_layers",
                                     "only decoder layers have this field")
                parsed.append(LayerConfig(**lay))
            stacks[name] = StackConfig(embed_dim=emb, layers=tuple(parsed))
        return cls(**stacks)

    @classmethod
    def from_json(cls, text: str, source: str = "subnet") -> Subnet:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpaceError(source, "<json>",
                             f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        return cls.from_dict(d, source)

    @classmethod
    def load(cls, path: str | Path) -> Subnet:
        p = Path(path)
        if not p.is_file():
            raise SpaceError(str(p), "<file>", "no such subnet file (expected a JSON subnet)")
        return cls.from_json(p.read_text(), str(p))
