"""What the measuring process can control on a shared machine (DESIGN.md section 8).

- cores: pin every thread of the process to chosen cores (`os.sched_setaffinity`), so the
  scheduler does not move the measurement between cores (cold caches) in the middle of a run;
- the allocator: glibc's `mallopt` keeps freed memory in the heap (no trimming) and serves big
  blocks from it instead of fresh `mmap`s, so a run does not pay page faults that the previous
  run's frees caused (beam x vocabulary logits are hundreds of KiB, above glibc's default
  128 KiB mmap threshold). That is what MALLOC_TRIM_THRESHOLD_ and MALLOC_MMAP_THRESHOLD_
  would set at start-up, done from inside the running process (other processes unchanged);
- the load: how many cores other processes keep busy, from /proc/stat (a short sample, minus
  this process's own CPU time) and `os.getloadavg`; `check_load` warns, or refuses, when fewer
  cores are free than the measurement needs.

Pure Python (no torch); Linux facilities degrade to "unknown" elsewhere.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

from fairseq_nas.errors import FairseqNasError

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 1024 * 1024 * 1024


# --- cores --------------------------------------------------------------------------------------


def allowed_cores() -> list[int]:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def parse_cores(text: Optional[str]) -> Optional[list[int]]:
    """'0,2-3' -> [0, 2, 3]; 'auto' -> [] (choose the least busy cores later); None -> None (no pinning)."""
    if text is None:
        return None
    if text.strip() == "auto":
        return []
    cores: set[int] = set()
    try:
        for part in text.split(","):
            a, _, b = part.strip().partition("-")
            lo, hi = int(a), int(b or a)
            if lo < 0 or hi < lo:
                raise ValueError
            cores.update(range(lo, hi + 1))
    except ValueError:
        raise FairseqNasError(f"--cores {text!r}: expected 'auto' or core numbers such as 0 or 0,2-3") from None
    allowed = set(allowed_cores())
    if not cores <= allowed:
        raise FairseqNasError(f"--cores {text!r}: cores {sorted(cores - allowed)} are not available to this "
                              f"process (allowed: {','.join(map(str, sorted(allowed)))})")
    return sorted(cores)


def _thread_ids() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


@contextlib.contextmanager
def pinned(cores: Optional[Sequence[int]]) -> Iterator[Optional[list[int]]]:
    """Pin every thread of the process to `cores` for the block (threads started inside inherit
    it), then restore the previous affinity. None or empty: no pinning."""
    if not cores or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    before = {tid: os.sched_getaffinity(tid) for tid in _thread_ids() if _try_get(tid)}
    for tid in before:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cores)
    try:
        yield sorted(cores)
    finally:
        for tid, mask in before.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, mask)


def _try_get(tid: int) -> bool:
    try:
        os.sched_getaffinity(tid)
        return True
    except OSError:
        return False


# --- allocator ----------------------------------------------------------------------------------


def tune_allocator() -> Optional[dict[str, int]]:
    """Set glibc's trim and mmap thresholds (see the module docstring); returns what was set, or
    None where there is no glibc. Setting them again is harmless."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return {"mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD} if ok else None


# --- load ---------------------------------------------------------------------------------------


def _read_proc_stat() -> Optional[dict[int, tuple[int, int]]]:
    """core -> (busy jiffies, total jiffies) from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *vals = line.split()
            v = [int(x) for x in vals[:8]]
            idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
            out[int(name[3:])] = (sum(v) - idle, sum(v))
    return out


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class CpuSnapshot:
    """A point to measure other processes' CPU use from (busy cores = jiffies / elapsed)."""

    stat: Optional[dict[int, tuple[int, int]]]
    own_s: float
    wall: float


class LoadMeter:
    """Cores kept busy by *other* processes between two snapshots: the busy jiffies of the allowed
    cores minus this process's own CPU time. `read` is injectable for tests."""

    def __init__(self, cores: Optional[Sequence[int]] = None,
                 read: Optional[Callable[[], Optional[dict[int, tuple[int, int]]]]] = None,
                 own_cpu_s: Optional[Callable[[], float]] = None):
        self.cores = list(cores) if cores else allowed_cores()
        self.read = read or _read_proc_stat
        self.own_cpu_s = own_cpu_s or _own_cpu_s

    def snapshot(self) -> CpuSnapshot:
        return CpuSnapshot(self.read(), self.own_cpu_s(), time.monotonic())

    def busy_by_others(self, a: CpuSnapshot, b: CpuSnapshot) -> Optional[float]:
        """Average number of the allowed cores that other processes kept busy between a and b."""
        if a.stat is None or b.stat is None:
            return None
        busy = total = n = 0
        for c in self.cores:
            if c in a.stat and c in b.stat:
                busy += b.stat[c][0] - a.stat[c][0]
                total += b.stat[c][1] - a.stat[c][1]
                n += 1
        if total <= 0:
            return None
        own = (b.own_s - a.own_s) / max(b.wall - a.wall, 1e-9)
        return max(0.0, busy / total * n - own)

    def per_core_busy(self, a: CpuSnapshot, b: CpuSnapshot) -> dict[int, float]:
        """Busy fraction of each allowed core between the snapshots (this process included)."""
        if a.stat is None or b.stat is None:
            return {}
        out = {}
        for c in self.cores:
            if c in a.stat and c in b.stat:
                total = b.stat[c][1] - a.stat[c][1]
                out[c] = (b.stat[c][0] - a.stat[c][0]) / total if total > 0 else 0.0
        return out


@dataclass
class LoadReport:
    cores: int  # cores this process may use
    needed: int
    busy_by_others: Optional[float]  # from the /proc/stat sample
    loadavg_1m: Optional[float]
    sample_s: float
    per_core: dict[int, float]

    @property
    def free(self) -> Optional[float]:
        """Free cores by the busier of the two signals (the sample, the 1-minute load average)."""
        signals = [x for x in (self.busy_by_others, self.loadavg_1m) if x is not None]
        return None if not signals else self.cores - max(signals)

    def to_dict(self) -> dict:
        return {"cores": self.cores, "needed": self.needed, "busy_by_others": _round(self.busy_by_others),
                "loadavg_1m": _round(self.loadavg_1m), "free": _round(self.free), "sample_s": self.sample_s}

    def least_busy(self, k: int) -> list[int]:
        """The k least busy allowed cores in the sample (by core number where unknown)."""
        order = sorted(self.per_core, key=lambda c: (self.per_core[c], c)) if self.per_core else allowed_cores()
        return sorted(order[:k])


def _round(x: Optional[float]) -> Optional[float]:
    return None if x is None else round(float(x), 3)


def _loadavg() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def sample_load(needed: int, seconds: float = 0.5, meter: Optional[LoadMeter] = None,
                loadavg: Optional[Callable[[], Optional[float]]] = None) -> LoadReport:
    """Sample /proc/stat over `seconds` (this process idle meanwhile) and read the load average."""
    meter = meter or LoadMeter()
    a = meter.snapshot()
    time.sleep(seconds)
    b = meter.snapshot()
    la = (loadavg or _loadavg)()
    return LoadReport(len(meter.cores), needed, meter.busy_by_others(a, b), la, seconds, meter.per_core_busy(a, b))


def check_load(report: LoadReport, strict: bool, what: str = "latency") -> Optional[str]:
    """A one-line warning (printed to stderr, and returned) when fewer cores are free than
    needed; with `strict` a FairseqNasError instead. None when the load is fine or unknown."""
    free = report.free
    if free is None or free >= report.needed - 0.25:  # a quarter core of slack: sampling noise
        return None
    parts = []
    if report.busy_by_others is not None:
        parts.append(f"other processes kept {report.busy_by_others:.1f} of {report.cores} cores busy")
    if report.loadavg_1m is not None:
        parts.append(f"load average {report.loadavg_1m:.2f}")
    msg = (f"{what}: {', '.join(parts)}: about {max(free, 0.0):.1f} free core(s), the measurement needs "
           f"{report.needed}; figures will be noisy and slower than on an idle machine")
    if strict:
        raise FairseqNasError(msg + " (--strict: refusing to measure; wait for a quieter machine or drop --strict)")
    line = f"warning: {msg} (--strict refuses)"
    print(line, file=sys.stderr)
    return line
