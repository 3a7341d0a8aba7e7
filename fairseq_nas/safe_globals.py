"""Globals that fairseq really stores in checkpoints, allowed for `torch.load(weights_only=True)`.

fairseq calls torch.load without `weights_only`, so torch's safe default applies. Rather than
turning the check off we allow the few plain types fairseq's checkpoints contain.
"""
from __future__ import annotations

import argparse

import torch

_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    allowed: list = [argparse.Namespace]
    try:
        import numpy as np

        allowed += [np.dtype, np.core.multiarray.scalar] if hasattr(np, "core") else [np.dtype]
        allowed += [type(np.dtype(np.float64)), type(np.dtype(np.float32)), type(np.dtype(np.int64))]
    except Exception:  # numpy layout differs between versions
        pass
    torch.serialization.add_safe_globals(allowed)
    _registered = True


register()
