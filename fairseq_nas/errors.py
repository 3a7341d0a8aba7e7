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
