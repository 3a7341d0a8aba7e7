"""Latency rows on disk (JSON Lines, append-only, resumable) and subnet lists to measure.

A row is keyed by its subnet's canonical JSON and its repeat index (the pass). A killed
run leaves at most a truncated last line, which `LatencyStore` cuts off on opening; a
resumed run skips the keys already present, so no row is measured twice or lost.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from fairseq_nas.errors import FairseqNasError, SpaceError
from fairseq_nas.space import SearchSpace, Subnet

# Settings that change what is measured: rows that differ in one of them do not belong in one file.
PROTOCOL_FIELDS = ("device", "dtype", "threads", "src_len", "tgt_len", "beam", "src_vocab", "tgt_vocab", "runs")


def row_key(subnet: Union[Subnet, dict], repeat: int = 0) -> tuple[str, int]:
    """(canonical subnet JSON, repeat index)."""
    if isinstance(subnet, dict):
        subnet = Subnet.from_dict(subnet)
    return subnet.to_json(), int(repeat)


class LatencyStore:
    """Rows already in a JSONL file, and appending new ones (one line each, flushed and fsynced)."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}
        self.repaired = False
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        if self.path.is_dir():
            raise FairseqNasError(f"--out {self.path}: is a directory; expected a .jsonl file")
        data = self.path.read_bytes()
        *complete, tail = data.split(b"\n")  # tail: what follows the last newline ("" in a clean file)
        for i, raw in enumerate(complete, 1):
            if raw.strip():
                try:
                    self._add(raw)
                except ValueError as e:
                    raise FairseqNasError(f"{self.path}:{i}: not a latency row ({e}); fix or remove the "
                                          "line") from None
        if tail.strip():  # a last line without its newline: written when the run was killed
            try:
                self._add(tail)
            except ValueError:  # truncated: drop it (it is measured again)
                with open(self.path, "r+b") as f:
                    f.truncate(len(data) - len(tail))
            else:  # complete JSON: just end the line
                with open(self.path, "ab") as f:
                    f.write(b"\n")
            self.repaired = True

    def _add(self, raw: bytes) -> None:
        try:
            row = json.loads(raw.decode("utf-8"))
            key = row_key(row["subnet"], row.get("repeat", 0))
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, FairseqNasError) as e:
            raise ValueError(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
        self.rows[key] = row

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def check_protocol(self, settings: dict[str, Any]) -> None:
        """Fail if an existing row was measured with other settings (mixing them would be meaningless)."""
        for row in self.rows.values():
            diff = {k: (row.get(k), settings[k]) for k in PROTOCOL_FIELDS
                    if k in settings and k in row and row[k] != settings[k]}
            if diff:
                what = ", ".join(f"{k} {old!r} (now {new!r})" for k, (old, new) in diff.items())
                raise FairseqNasError(f"{self.path}: has rows measured with other settings: {what}; "
                                      "use another --out or the same settings")

    def append(self, row: dict[str, Any]) -> None:
        key = row_key(row["subnet"], row.get("repeat", 0))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(row, sort_keys=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.rows[key] = row


def read_subnets(path: Union[str, Path], space: SearchSpace) -> list[Subnet]:
    """Subnets of a JSON Lines file (a subnet object, or a row with a "subnet" key, per line;
    blank lines skipped), each validated against `space`; errors name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise FairseqNasError(f"--subnets {p}: no such file (expected JSON lines of subnets)")
    out = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        source = f"{p}:{i}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise SpaceError(source, "<json>", f"not valid JSON ({e.msg} at column {e.colno})") from None
        if isinstance(obj, dict) and "subnet" in obj:
            obj = obj["subnet"]
        subnet = Subnet.from_dict(obj, source)
        space.validate_subnet(subnet, source)
        out.append(subnet)
    if not out:
        raise FairseqNasError(f"--subnets {p}: no subnets in the file")
    return out


def sample_subnets(space: SearchSpace, n: int, seed: int, max_tries: Optional[int] = None) -> list[Subnet]:
    """Up to n distinct subnets drawn with `space.sample(random.Random(seed))` (fewer only if the
    space has fewer: gives up after 100 x n draws)."""
    rng = random.Random(seed)
    seen: dict[str, Subnet] = {}
    tries = 0
    limit = max_tries if max_tries is not None else 100 * max(n, 1)
    while len(seen) < n and tries < limit:
        s = space.sample(rng)
        seen.setdefault(s.to_json(), s)
        tries += 1
    return list(seen.values())


def distinct(subnets: Iterable[Subnet]) -> list[Subnet]:
    """The subnets without repeats, first occurrence kept, order kept."""
    seen: dict[str, Subnet] = {}
    for s in subnets:
        seen.setdefault(s.to_json(), s)
    return list(seen.values())


def parse_shard(text: Optional[str]) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N; None -> (0, 1)."""
    if text is None:
        return 0, 1
    parts = str(text).split("/")
    try:
        if len(parts) != 2:
            raise ValueError
        i, n = int(parts[0]), int(parts[1])
    except ValueError:
        raise FairseqNasError(f"--shard {text!r}: expected I/N with integers 0 <= I < N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise FairseqNasError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return i, n


def shard(items: list, index: int, count: int) -> list[tuple[int, Any]]:
    """(i, item) for the items whose position i satisfies i % count == index."""
    return [(i, x) for i, x in enumerate(items) if i % count == index]
