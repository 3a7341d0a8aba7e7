"""Latency rows on disk (JSON Lines, append-only, resumable) and subnet lists to measure.

A row is keyed by its subnet's canonical JSON and its repeat index (the pass). A killed
run leaves at most a truncated last line, which `LatencyStore` cuts off on opening; a
resumed run skips the keys already present, so no row is measured twice or lost. With the
rounds protocol a subnet's row is written once all its rounds are done; the rounds done so
far live in a sidecar (`RoundLog`, OUT's stem + .rounds.jsonl), so a kill loses at most the
round in progress.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

from fairseq_nas.errors import FairseqNasError, SpaceError
from fairseq_nas.space import SearchSpace, Subnet

# Settings that change what is measured: rows that differ in one of them do not belong in one file.
PROTOCOL_FIELDS = ("device", "dtype", "threads", "src_len", "tgt_len", "beam", "src_vocab", "tgt_vocab", "runs",
                   "protocol", "rounds", "decoder_loop", "latency_stat", "latency_clock", "conv_kernels")
# What rows written before these fields existed were measured with.
LEGACY_SETTINGS = {"protocol": "block", "rounds": 1, "decoder_loop": "bare", "latency_stat": "trimmed_mean",
                   "latency_clock": "wall", "conv_kernels": "pytorch"}


def row_key(subnet: Union[Subnet, dict], repeat: int = 0) -> tuple[str, int]:
    """(canonical subnet JSON, repeat index)."""
    if isinstance(subnet, dict):
        subnet = Subnet.from_dict(subnet)
    return subnet.to_json(), int(repeat)


def read_repairing(path: Path, add: Callable[[bytes], None], what: str) -> bool:
    """Feed every complete line of a JSONL file to `add` (which raises ValueError on a bad one).
    A last line without its newline was written when a run was killed: if it does not parse it is
    cut off (it is measured again), else its newline is added. Returns whether it repaired."""
    if path.is_dir():
        raise FairseqNasError(f"--out {path}: is a directory; expected a .jsonl file")
    data = path.read_bytes()
    *complete, tail = data.split(b"\n")  # tail: what follows the last newline ("" in a clean file)
    for i, raw in enumerate(complete, 1):
        if raw.strip():
            try:
                add(raw)
            except ValueError as e:
                raise FairseqNasError(f"{path}:{i}: not {what} ({e}); fix or remove the line") from None
    if not tail.strip():
        return False
    try:
        add(tail)
    except ValueError:  # truncated: drop it
        with open(path, "r+b") as f:
            f.truncate(len(data) - len(tail))
    else:  # complete JSON: just end the line
        with open(path, "ab") as f:
            f.write(b"\n")
    return True


def append_line(path: Path, obj: dict[str, Any]) -> None:
    """Append one JSON line, flushed and fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())


class LatencyStore:
    """Rows already in a JSONL file, and appending new ones (one line each, flushed and fsynced)."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}
        self.repaired = False
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        self.repaired = read_repairing(self.path, self._add, "a latency row")

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
            diff = {}
            for k in PROTOCOL_FIELDS:
                old = row.get(k, LEGACY_SETTINGS.get(k))
                if k in settings and old is not None and old != settings[k]:
                    diff[k] = (old, settings[k])
            if diff:
                what = ", ".join(f"{k} {old!r} (now {new!r})" for k, (old, new) in diff.items())
                raise FairseqNasError(f"{self.path}: has rows measured with other settings: {what}; "
                                      "use another --out or the same settings")

    def append(self, row: dict[str, Any]) -> None:
        key = row_key(row["subnet"], row.get("repeat", 0))
        append_line(self.path, row)
        self.rows[key] = row


def rounds_path(out: Union[str, Path]) -> Path:
    """The sidecar of an output file: latency.jsonl -> latency.rounds.jsonl."""
    out = Path(out)
    return out.with_name((out.stem if out.suffix else out.name) + ".rounds.jsonl")


class RoundLog:
    """The per-round timings of subnets measured in rounds (the sidecar of `--protocol rounds`).

    One line per (subnet, pass, round): {"subnet", "repeat", "round", "encoder", "decoder", "cpu"
    (the round's runs, ms), "load", "settings"}. Appended and fsynced as each round of a subnet
    ends, so a killed run resumes with the rounds it had done; a subnet's row is written to the
    main file once all its rounds are here. Lines measured with other `settings` are an error."""

    def __init__(self, path: Union[str, Path], settings: dict[str, Any]):
        self.path = Path(path)
        self.settings = dict(settings)
        self.entries: dict[tuple[str, int], dict[int, dict[str, Any]]] = {}
        self.repaired = False
        if self.path.exists():
            self.repaired = read_repairing(self.path, self._add, "a round of latency timings")

    def _add(self, raw: bytes) -> None:
        try:
            e = json.loads(raw.decode("utf-8"))
            key = row_key(e["subnet"], e.get("repeat", 0))
            r = int(e["round"])
            for part in ("encoder", "decoder", "cpu"):
                if not isinstance(e[part], list):
                    raise TypeError(f"{part} is not a list")
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, FairseqNasError) as err:
            raise ValueError(f"{type(err).__name__}: {' '.join(str(err).split())[:200]}") from None
        old = e.get("settings") or {}
        diff = {k: (old.get(k), v) for k, v in self.settings.items() if k in old and old[k] != v}
        if diff:
            what = ", ".join(f"{k} {a!r} (now {b!r})" for k, (a, b) in diff.items())
            raise FairseqNasError(f"{self.path}: has rounds measured with other settings: {what}; use another "
                                  "--out or the same settings")
        self.entries.setdefault(key, {})[r] = e

    def done(self, key: tuple[str, int]) -> int:
        """Rounds 0, 1, ... of `key` that are all here (a gap ends the count)."""
        have = self.entries.get(key, {})
        n = 0
        while n in have:
            n += 1
        return n

    def append(self, subnet: dict[str, Any], repeat: int, r: int, times: dict[str, list[float]],
               load: Optional[dict[str, Any]] = None) -> None:
        entry = {"subnet": subnet, "repeat": repeat, "round": r, **{k: times[k] for k in ("encoder", "decoder", "cpu")},
                 "load": load, "settings": self.settings}
        append_line(self.path, entry)
        self.entries.setdefault(row_key(subnet, repeat), {})[r] = entry

    def rounds(self, key: tuple[str, int], n: int) -> list[dict[str, Any]]:
        """The entries of rounds 0 .. n-1 of `key`, in order."""
        have = self.entries.get(key, {})
        return [have[r] for r in range(n)]


def read_subnets(path: Union[str, Path], space: SearchSpace) -> list[Subnet]:
    """Subnets of a JSON Lines file (a subnet object, or a row with a "subnet" key, per line;
    blank lines skipped), or of one pretty-printed JSON document (a subnet such as the search's
    best.json, or a list), each validated against `space`; errors name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise FairseqNasError(f"--subnets {p}: no such file (expected JSON lines of subnets)")
    text = p.read_text(encoding="utf-8")
    try:  # one (pretty-printed) JSON document: a subnet, e.g. the search's best.json, or a list of them
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, (dict, list)) and "\n" in text.strip():
        items = whole if isinstance(whole, list) else [whole]
        entries = [(f"{p}[{i}]" if isinstance(whole, list) else str(p), obj) for i, obj in enumerate(items)]
    else:
        entries = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append((f"{p}:{i}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise SpaceError(f"{p}:{i}", "<json>", f"not valid JSON ({e.msg} at column {e.colno})") from None
    out = []
    for source, obj in entries:
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
