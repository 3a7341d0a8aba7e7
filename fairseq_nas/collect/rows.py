"""The archs.jsonl row format: append-only writing, resumable reading, validated loading for ranking.

One JSON object per line, written and flushed one row at a time by ``fairseq-nas collect``::

    {"index": 3, "subnet": {...}, "valid_loss": 4.21, "valid_nll_loss": 3.87, "params": 1843200,
     "flops": 1.2e8, "bleu": 21.3, "n_sentences": 200, "n_tokens": 4711, "subset": "valid",
     "seed": 1, "strategy": "random", "round": 2, "space": "shrinknas_iwslt14", "eval_s": 0.41}

``valid_loss`` / ``valid_nll_loss``: label-smoothed cross-entropy and NLL per target token in
base 2, as fairseq's ``valid_loss`` / ``valid_nll_loss``. ``flops`` only when
``fairseq_nas.latency.costs.count_flops`` exists, ``bleu`` only with ``--bleu``, ``round`` only
for the iterative strategy. The space the subnets belong to is written once next to the rows
(:func:`space_sidecar`: ``archs.jsonl`` -> ``archs.space.yaml``); rows only carry its name.

Pure Python (+numpy): no torch, no fairseq.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Optional, Sequence, Union

import numpy as np

from fairseq_nas.errors import FairseqNasError, SpaceError

PathLike = Union[str, "os.PathLike[str]"]

#: words that make a target "lower is better" / "higher is better" (checked in this order)
LOWER_BETTER = ("loss", "latency", "_ms", "ms_", "ppl", "perplexity", "params", "flops", "macs", "time",
                "energy", "memory", "size", "error")
HIGHER_BETTER = ("bleu", "acc", "score", "reward", "chrf", "throughput")


def space_sidecar(rows_path: PathLike) -> Path:
    """Where the space of a rows file is written: ``archs.jsonl`` -> ``archs.space.yaml``."""
    p = Path(rows_path)
    stem = p.name[: -len(p.suffix)] if p.suffix in (".jsonl", ".json", ".ndjson") else p.name
    return p.with_name(f"{stem}.space.yaml")


def parse_shard(text: Optional[str]) -> tuple[int, int]:
    """``"I/N"`` -> (I, N), I in 0..N-1; None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        i_s, n_s = str(text).split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise FairseqNasError(f"--shard: expected I/N with integers (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise FairseqNasError(f"--shard: {text!r}: need N >= 1 and I in 0..N-1 (shards are numbered from 0)")
    return i, n


# ---------------------------------------------------------------------------------------------
# Reading and appending (collect)
# ---------------------------------------------------------------------------------------------
def read_rows(path: PathLike, tolerate_truncated: bool = True) -> tuple[list[tuple[int, dict]], bool]:
    """``([(line number, row), ...], truncated)`` of a JSON-lines file (missing file: no rows).

    A last line without its newline that does not parse is the trace of a killed writer: it is
    dropped (``truncated`` = True) when ``tolerate_truncated``. Any other bad line is an error
    naming the file and the line number. Blank lines are skipped.
    """
    p = Path(path)
    if not p.exists():
        return [], False
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FairseqNasError(f"{p}: cannot read ({e})") from None
    lines = text.split("\n")
    rows: list[tuple[int, dict]] = []
    truncated = False
    for no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last_unterminated = no == len(lines)  # text after the final newline
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if last_unterminated and tolerate_truncated:
                truncated = True
                break
            raise FairseqNasError(f"{p}:{no}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise FairseqNasError(f"{p}:{no}: expected a JSON object, got {type(row).__name__}")
        rows.append((no, row))
    return rows, truncated


class RowWriter:
    """Append rows to a JSON-lines file, one flushed (and fsynced) line at a time.

    Opening cuts off a partial last line (a killed writer's), so the next row starts on its own
    line. Use as a context manager.
    """

    def __init__(self, path: PathLike, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._cut_partial_line()
        self._f: Optional[IO[str]] = open(self.path, "a", encoding="utf-8")

    def _cut_partial_line(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb+") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            # find the last newline; a complete JSON object after it only lacks its newline
            pos, cut = size, 0
            while pos > 0:
                start = max(0, pos - 4096)
                f.seek(start)
                k = f.read(pos - start).rfind(b"\n")
                if k >= 0:
                    cut = start + k + 1
                    break
                pos = start
            f.seek(cut)
            tail = f.read()
            try:
                complete = isinstance(json.loads(tail.decode("utf-8")), dict)
            except (UnicodeDecodeError, json.JSONDecodeError):
                complete = False
            if complete:
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
            else:
                f.truncate(cut)

    def write(self, row: dict[str, Any]) -> None:
        assert self._f is not None, "RowWriter is closed"
        self._f.write(json.dumps(row, separators=(",", ":"), allow_nan=False) + "\n")
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Loading rows for ranking (rank, benchmarks)
# ---------------------------------------------------------------------------------------------
def target_direction(target: str) -> str:
    """``"lower"`` or ``"higher"``: which way a target named ``target`` is better, or an error."""
    name = target.lower()
    for word in LOWER_BETTER:
        if word in name:
            return "lower"
    for word in HIGHER_BETTER:
        if word in name:
            return "higher"
    raise FairseqNasError(f"--target {target}: cannot tell whether lower or higher is better; "
                          "add --lower-is-better or --higher-is-better")


def lookup(row: dict, key: str) -> Any:
    """``row[key]``, else the dotted path (``latency.total_ms``); KeyError when absent."""
    if key in row:
        return row[key]
    cur: Any = row
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(key)
        cur = cur[part]
    return cur


@dataclass
class RowSet:
    """Rows read for ranking: subnets, their raw target values and where each came from."""

    space: Any  # SearchSpace
    space_source: str
    subnets: list = field(default_factory=list)
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rows: list[dict] = field(default_factory=list)
    where: list[str] = field(default_factory=list)  # "file:line"
    duplicates: int = 0  # extra rows of a subnet already seen (their target values are averaged in)
    truncated: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.subnets)


def resolve_space(paths: Sequence[PathLike], space_spec: Optional[str], first_rows: Iterable[dict]):
    """(space, description of where it came from) for rows files.

    Order: ``--space`` when given; else the sidecar ``<stem>.space.yaml`` of the first file that
    has one; else a builtin space named by the rows' ``space`` field.
    """
    from fairseq_nas.space import load_space, parse_space

    if space_spec:
        return load_space(space_spec), str(space_spec)
    for p in paths:
        side = space_sidecar(p)
        if side.is_file():
            return parse_space(side.read_text(encoding="utf-8"), str(side)), str(side)
    for row in first_rows:
        name = row.get("space")
        if isinstance(name, str) and name:
            try:
                return load_space(name), f"builtin {name} (named by the rows)"
            except SpaceError:
                break
    names = ", ".join(str(space_sidecar(p)) for p in paths)
    raise FairseqNasError(f"{paths[0]}: cannot tell the search space of these rows: no {names} and no "
                          "builtin 'space' name in the rows; give --space NAME|FILE")


def load_rowset(paths: Sequence[PathLike], target: str, space_spec: Optional[str] = None) -> RowSet:
    """Read and check rows files for ranking: every row needs a ``subnet`` of the space and a finite
    numeric ``target``; the first bad row is a one-line error ``file:line: field: problem``.

    A truncated last line (killed writer) is skipped and reported in ``truncated``. A subnet seen
    more than once (repeated latency measurements, overlapping shards) keeps its first row and the
    mean of its target values (``duplicates`` counts the extra rows).
    """
    from fairseq_nas.space import Subnet

    if not paths:
        raise FairseqNasError("no rows files given")
    per_file: list[tuple[Path, list[tuple[int, dict]]]] = []
    truncated: list[str] = []
    for p in map(Path, paths):
        if not p.is_file():
            raise FairseqNasError(f"{p}: no such rows file (JSON lines from fairseq-nas collect or latency)")
        rows, cut = read_rows(p)
        if cut:
            truncated.append(str(p))
        per_file.append((p, rows))
    first_rows = (r for _, rows in per_file for _, r in rows[:1])
    space, space_source = resolve_space([p for p, _ in per_file], space_spec, first_rows)
    out = RowSet(space=space, space_source=space_source, truncated=truncated)
    seen: dict[str, int] = {}
    values: list[list[float]] = []
    for p, rows in per_file:
        for no, row in rows:
            where = f"{p}:{no}"
            if "subnet" not in row:
                raise FairseqNasError(f"{where}: subnet: missing (every row needs the subnet it describes)")
            try:
                subnet = Subnet.from_dict(row["subnet"], source=f"{where}: subnet")
                space.validate_subnet(subnet, source=f"{where}: subnet (space {space.name} from {space_source})")
            except SpaceError as e:
                raise FairseqNasError(str(e)) from None
            try:
                v = lookup(row, target)
            except KeyError:
                keys = ", ".join(k for k in row if k != "subnet")
                raise FairseqNasError(f"{where}: {target}: missing (the --target); this row has: {keys}") from None
            if isinstance(v, dict):
                sub = ", ".join(f"{target}.{k}" for k in v)
                raise FairseqNasError(f"{where}: {target}: is an object; pick one of its fields: {sub}")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                raise FairseqNasError(f"{where}: {target}: expected a finite number, got {v!r}")
            key = subnet.key()
            if key in seen:
                out.duplicates += 1
                values[seen[key]].append(float(v))
                continue
            seen[key] = len(values)
            out.subnets.append(subnet)
            out.rows.append(row)
            out.where.append(where)
            values.append([float(v)])
    out.values = np.asarray([sum(vs) / len(vs) for vs in values], dtype=np.float64)
    return out
