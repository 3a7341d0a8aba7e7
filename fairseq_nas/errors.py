"""User-facing errors: one line naming the file, the field and what would be valid.

No torch or fairseq import here: every layer of the package may raise these.
"""
from __future__ import annotations


class FairseqNasError(Exception):
    """A user mistake. The CLI prints ``fairseq-nas: error: <message>`` and exits 2."""


class SpaceError(FairseqNasError):
    """A malformed search space file or a subnet that does not fit its space."""

    def __init__(self, source: str, field: str, problem: str):
        self.source, self.field, self.problem = source, field, problem
        super().__init__(f"{source}: {field}: {problem}")


def install_excepthook() -> None:
    """In fairseq's own tools (fairseq-train, fairseq-generate, ...), print an uncaught
    FairseqNasError as one line, as `fairseq-nas` does, instead of a traceback. Also when fairseq
    wraps it (a failed checkpoint load); FAIRSEQ_NAS_TRACEBACK=1 keeps the traceback."""
    import os
    import sys

    previous = sys.excepthook
    if getattr(previous, "fairseq_nas", False):
        return

    def hook(kind, value, tb):
        if not os.environ.get("FAIRSEQ_NAS_TRACEBACK"):
            if isinstance(value, FairseqNasError):
                sys.stderr.write(f"fairseq-nas: error: {value}\n")
                return
            inner = value.__cause__ or value.__context__
            if isinstance(inner, FairseqNasError):
                sys.stderr.write(f"fairseq-nas: error: {inner} ({value})\n")
                return
        previous(kind, value, tb)

    hook.fairseq_nas = True  # type: ignore[attr-defined]
    sys.excepthook = hook
