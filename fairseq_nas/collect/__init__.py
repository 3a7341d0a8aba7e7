"""Evaluation of subnets with inherited supernet weights (``fairseq-nas collect``) and the rows format.

``rows`` (pure Python): reading/appending archs.jsonl, the space sidecar, loading rows for ranking.
``runner``: :func:`collect`, the sampling strategies and the resumable loop (numpy; torch only via the evaluator).
``evaluate``: :class:`SubnetEvaluator`, which loads a supernet checkpoint with fairseq (torch).
"""
from fairseq_nas.collect.rows import (
    RowSet,
    RowWriter,
    load_rowset,
    lookup,
    parse_shard,
    read_rows,
    space_sidecar,
    target_direction,
)

__all__ = ["RowSet", "RowWriter", "load_rowset", "lookup", "parse_shard", "read_rows", "space_sidecar",
           "target_direction", "collect", "SubnetEvaluator"]


def __getattr__(name: str):
    """Lazy: ``collect`` and ``SubnetEvaluator`` (the latter imports torch and fairseq)."""
    if name == "collect":
        from fairseq_nas.collect.runner import collect

        return collect
    if name == "SubnetEvaluator":
        from fairseq_nas.collect.evaluate import SubnetEvaluator

        return SubnetEvaluator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
