"""Drift between groups, measured by an anchor subnet timed in every group.

Rounds interleave the subnets of one group, so drift within a group's measurement hits them
alike. Groups are measured one after the other, minutes apart, and on a shared machine the
whole machine can be 10-15% slower in one group than in the next (seen on the HAT space: one
group's 32 subnets measured 13% below the other groups' level against the same linear model).
So the same subnet, the anchor, is measured in every group, in its rounds like the others, and
each row records the anchor's latency in its own group. `drift_corrected_ms` is the row's
latency at the anchor's level in the first group of the file:

    drift_corrected_ms = latency_ms * anchor.ref_ms / anchor.ms

`latency_ms` itself stays what was measured. Rows measured without an anchor (one group, the
block protocol, --no-anchor) have `drift_corrected_ms` equal to `latency_ms` and no `anchor`, so
`fairseq-nas rank latency.jsonl --target drift_corrected_ms` (what the recipes and the demo fit
the latency model on) works on every file `latency` writes.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

from fairseq_nas.space import Subnet


def choose_anchor(subnets: Sequence[Subnet], sizes: Sequence[float]) -> Subnet:
    """The subnet of median size (the first of two at the median), so that the anchor's time is
    neither the noisiest (smallest) nor the costliest to repeat (largest). Deterministic in the
    list, so a resumed run picks the same one."""
    if not subnets:
        raise ValueError("no subnets to choose an anchor from")
    order = sorted(range(len(subnets)), key=lambda i: (sizes[i], i))
    return subnets[order[(len(order) - 1) // 2]]


def anchor_of_rows(rows: Iterable[dict[str, Any]]) -> Optional[tuple[Subnet, float]]:
    """The anchor subnet and reference level recorded in earlier rows of a file (None if none)."""
    for row in rows:
        anchor = row.get("anchor")
        if isinstance(anchor, dict) and anchor.get("subnet") and anchor.get("ref_ms"):
            return Subnet.from_json(anchor["subnet"]), float(anchor["ref_ms"])
    return None


def annotate(row: dict[str, Any], anchor: Subnet, anchor_ms: Optional[float], ref_ms: Optional[float]) -> None:
    """Add the anchor fields to a result row (in place). Without the anchor's level in the row's
    group (the row's rounds were all done in an earlier, interrupted run) the correction is None."""
    row["anchor"] = {"subnet": anchor.to_json(), "ms": anchor_ms, "ref_ms": ref_ms}
    ok = anchor_ms is not None and ref_ms is not None and anchor_ms > 0
    row["drift_corrected_ms"] = row["latency_ms"] * ref_ms / anchor_ms if ok else None
