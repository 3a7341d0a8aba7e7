"""The CPU convolution kernels of `conv_kernels.cpp`, built on first use with torch's C++ extension
loader (g++ and ninja; about 30 s once per machine, then cached under TORCH_EXTENSIONS_DIR, by default
~/.cache/torch_extensions).

`conv_ops()` returns the built module, or None when it cannot be had: no C++ compiler, a failed
build (logged once, with the reason), or FAIRSEQ_NAS_NATIVE_CONV=0 in the environment. Callers
then take the pure-PyTorch paths, which compute the same function more slowly. The build uses
-march=native, so the module name carries a digest of this CPU's model and flags (and of the torch
and Python it builds against): a cache shared by different machines or environments never loads
a build made for another one.
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
from pathlib import Path
from types import ModuleType
from typing import Optional

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("conv_kernels.cpp")
ENV_SWITCH = "FAIRSEQ_NAS_NATIVE_CONV"

_state: dict[str, Optional[ModuleType]] = {}


def _build_digest() -> str:
    """What a build is only valid for, hashed: the CPU's model name and feature flags (what
    -march=native compiles for) and the torch and Python it links against (two virtual
    environments sharing one extension cache would otherwise rebuild over each other's build)."""
    import sys

    import torch

    text = f"{platform.machine()} {torch.__version__} {Path(torch.__file__).parent} {sys.version}"
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        if line.startswith(("model name", "flags", "Features")):
            text += line
            if line.startswith(("flags", "Features")):
                break
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def enabled() -> bool:
    """False when the user switched the kernels off (FAIRSEQ_NAS_NATIVE_CONV=0)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _build() -> Optional[ModuleType]:
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        logger.warning("no C++ compiler found: the convolutions use their slower pure-PyTorch paths "
                       "(install g++ for the native CPU kernels)")
        return None
    from torch.utils.cpp_extension import load

    logger.info("loading the native convolution kernels (the first time on a machine they are built: "
                "about 30 s)")
    # 512-bit vectors where the CPU has them (gcc prefers 256 by default): about 25% faster here
    flags = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp"]
    try:
        return load(name=f"fairseq_nas_conv_{_build_digest()}", sources=[str(SOURCE)], extra_cflags=flags,
                    extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as err:  # a compiler error, a missing ninja, ...: fall back, say why once
        reason = str(err).strip().splitlines()
        logger.warning("the native convolution kernels did not build (%s): the convolutions use their "
                       "slower pure-PyTorch paths", reason[-1] if reason else type(err).__name__)
        return None


def conv_ops() -> Optional[ModuleType]:
    """The native kernels, or None (see the module docstring). Built at most once per process."""
    if not enabled():
        return None
    if "ops" not in _state:
        _state["ops"] = _build()
    return _state["ops"]
