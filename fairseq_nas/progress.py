"""Progress of long work: a tqdm bar on a terminal, plain periodic lines anywhere else.

A bar redraws itself with carriage returns, which a log file or a pipe keeps as one
unreadable line; so when the stream is not a terminal, `Progress` prints a line such as
``collect: 8/40 subnets (20%)`` every `every` of the total (or every `seconds`, whichever
comes first) and a last one when it closes. `disable=True` (the commands' `--no-progress`)
prints nothing either way.
"""
from __future__ import annotations

import math
import sys
import time
from typing import IO, Any, Optional


def _is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class Progress:
    """`update`, `set_postfix`, `close` as tqdm's; `total` may grow (`add_total`) or be None (no end known)."""

    def __init__(self, desc: str, total: Optional[int] = None, unit: str = "item", initial: int = 0,
                 disable: bool = False, file: Optional[IO[str]] = None, every: float = 0.1,
                 seconds: float = 30.0) -> None:
        self.desc, self.total, self.unit, self.n = desc, total, unit, int(initial)
        self.file = sys.stderr if file is None else file
        self.disable = disable
        self.every, self.seconds = every, seconds
        self._postfix = ""
        self._bar = None
        self._closed = False
        self._printed_at = self.n  # count at the last plain line
        self._next = self._next_step(self.n)
        self._last_time = time.monotonic()
        if not disable and _is_terminal(self.file):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, file=self.file, dynamic_ncols=True)

    def _next_step(self, n: int) -> Optional[int]:
        """The count at which the next plain line is due (None: no total, a line per update)."""
        if not self.total:
            return None
        step = max(1, math.ceil(self.total * self.every))
        return (n // step + 1) * step

    def _line(self) -> None:
        unit = self.unit if self.unit.endswith("s") else self.unit + "s"
        if self.total:
            text = f"{self.desc}: {self.n}/{self.total} {unit} ({100 * self.n // self.total}%)"
        else:
            text = f"{self.desc}: {self.n} {unit}"
        print(text + (f" {self._postfix}" if self._postfix else ""), file=self.file, flush=True)
        self._printed_at, self._last_time = self.n, time.monotonic()
        self._next = self._next_step(self.n)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.disable:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        if self._next is None or self.n >= self._next or time.monotonic() - self._last_time >= self.seconds:
            self._line()

    def add_total(self, n: int) -> None:
        """More work than first known (e.g. candidates measured after the top K)."""
        self.total = (self.total or 0) + n
        self._next = self._next_step(self._printed_at)
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def set_postfix(self, **fields: Any) -> None:
        self._postfix = " ".join(f"{k.rstrip('_')}={v}" for k, v in fields.items())
        if self._bar is not None:
            self._bar.set_postfix(**fields)

    def close(self, leave: bool = True) -> None:
        """End the bar; `leave=False` drops it (and the plain last line), e.g. when an error follows."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.leave = leave
            self._bar.close()
        elif leave and not self.disable and self.n != self._printed_at:
            self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
