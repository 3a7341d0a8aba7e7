"""The CPU convolution kernels of `conv_kernels.cpp`, built on first use with torch's C++ extension
loader (g++ and ninja; about 30 s once per machine, then cached under TORCH_EXTENSIONS_DIR, by default
~/.cache/torch_extensions). A finished build leaves a stamp beside its .so; later processes import
the .so directly, without running the build tool again.

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


# 512-bit vectors where the CPU has them (gcc prefers 256 by default): about 25% faster here
CFLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp")
LDFLAGS = ("-fopenmp",)


def _build_digest() -> str:
    """What a build is only valid for, hashed: the source and flags, the CPU's model name and
    feature flags (what -march=native compiles for), and the torch and Python it links against."""
    import sys

    import torch

    text = (f"{hashlib.sha1(SOURCE.read_bytes()).hexdigest()} {CFLAGS} {LDFLAGS} {platform.machine()} "
            f"{torch.__version__} {Path(torch.__file__).parent} {sys.version}")
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


def _import_built(name: str, path: Path) -> ModuleType:
    """Import an extension module built earlier (torch must be imported first)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def enabled() -> bool:
    """False when the user switched the kernels off (FAIRSEQ_NAS_NATIVE_CONV=0)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _build() -> Optional[ModuleType]:
    from torch.utils.cpp_extension import get_default_build_root, load

    name = f"fairseq_nas_conv_{_build_digest()}"  # a new source, flags, CPU or torch: a new build
    build_dir = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()) / name
    built, stamp = build_dir / f"{name}.so", build_dir / "fairseq_nas.built"
    if stamp.is_file() and built.is_file():
        # Import it directly: torch's loader would run ninja again, and processes whose ninja or
        # environment differ were seen rebuilding over each other's build (25 s each time).
        try:
            return _import_built(name, built)
        except ImportError as err:
            logger.warning("the native convolution kernels in %s did not load (%s); building them again",
                           build_dir, err)
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        logger.warning("no C++ compiler found: the convolutions use their slower pure-PyTorch paths "
                       "(install g++ for the native CPU kernels)")
        return None
    logger.info("building the native convolution kernels into %s (once: about 30 s)", build_dir)
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        module = load(name=name, sources=[str(SOURCE)], extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS),
                      build_directory=str(build_dir), verbose=False)
        stamp.write_text("built\n")
        return module
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
