"""Progress reports that suit where they go: a tqdm bar on a terminal, periodic single lines
in a log file (a redirected run, a batch job) instead of runs of carriage returns.

Used for SVI steps, feature-extraction units, structure bootstraps and batched predictions.
"""

from __future__ import annotations

import sys
import time

# A log gets one line at most this often (seconds), plus the first and the last.
LOG_INTERVAL_S = 30.0


class LineProgress:
    """tqdm's ``update``/``close`` interface, written as whole lines: ``desc: n/total (p%), t s``."""

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", initial: int = 0,
                 file=None, interval_s: float = LOG_INTERVAL_S):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.file = file if file is not None else sys.stderr
        self.interval_s = interval_s
        self._start = time.perf_counter()
        self._last = None
        self._closed = False

    def _line(self) -> None:
        elapsed = time.perf_counter() - self._start
        share = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        of = f"/{self.total}" if self.total is not None else ""
        print(f"{self.desc}: {self.n}{of} {self.unit}{share}, {elapsed:.1f} s", file=self.file, flush=True)
        self._last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._last is None or time.perf_counter() - self._last >= self.interval_s:
            self._line()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._line()

    def __iter__(self):  # pragma: no cover - used through progress_iter
        raise TypeError("use progress_iter to wrap an iterable")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int | None, desc: str = "", unit: str = "it", initial: int = 0, file=None):
    """A tqdm bar when ``file`` (default stderr) is a terminal, else a :class:`LineProgress`."""
    stream = file if file is not None else sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stream)
    return LineProgress(total, desc=desc, unit=unit, initial=initial, file=stream)


def progress_iter(iterable, total: int | None = None, desc: str = "", unit: str = "it", file=None):
    """Iterate ``iterable`` reporting progress (see :func:`progress_bar`)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    bar = progress_bar(total, desc=desc, unit=unit, file=file)
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()


__all__ = ["progress_bar", "progress_iter", "LineProgress", "LOG_INTERVAL_S"]
