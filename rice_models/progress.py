"""Progress where the user is looking: per-epoch lines with an ETA (for the Dagster log of a training
run) and a progress bar on a terminal that becomes plain lines when output goes to a file or a pipe.

Kept apart from `rice_models.training` on purpose: the training module is part of the training code
version (`rice_models.experiment`), and how progress is printed must not make fold models stale.
"""

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TypeVar

from tqdm import tqdm

from rice_models.training import EpochRecord

T = TypeVar("T")
PLAIN_EVERY_PERCENT = 10
"""Without a terminal, a plain line is printed each time this share of the items more is done."""


def format_duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `2 h 07 min` (negative or non-finite: `?`)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


class EpochProgress:
    """An `on_epoch` callback of `train_fold` that emits one line per epoch: loss, validation macro
    F1, the epoch's time and the estimated time left (mean epoch time so far × epochs left).

    Example line: `cell dose|0: epoch 3/20: train loss 0.6931, val macro F1 0.500, val loss 0.6925
    (1.2 s; ETA 20 s)`.
    """

    def __init__(self, total_epochs: int, emit: Callable[[str], None], label: str = "") -> None:
        if total_epochs < 1:
            raise ValueError(f"total_epochs must be at least 1, got {total_epochs}")
        self.total_epochs = total_epochs
        self.emit = emit
        self.prefix = f"{label}: " if label else ""
        self.seconds: list[float] = []

    def eta_seconds(self) -> float:
        """Seconds left at the mean epoch time so far (0 when done, NaN before the first epoch)."""
        if not self.seconds:
            return float("nan")
        left = self.total_epochs - len(self.seconds)
        return max(left, 0) * sum(self.seconds) / len(self.seconds)

    def line(self, record: EpochRecord) -> str:
        """The line for `record` (call after it was counted)."""
        eta = (
            "done" if len(self.seconds) >= self.total_epochs else f"ETA {format_duration(self.eta_seconds())}"
        )
        validation = (
            f", val macro F1 {record.val_macro_f1:.3f}, val loss {record.val_loss:.4f}"
            if record.val_macro_f1 is not None and record.val_loss is not None
            else ""
        )
        return (
            f"{self.prefix}epoch {record.epoch}/{self.total_epochs}: train loss {record.train_loss:.4f}"
            f"{validation} ({record.seconds:.1f} s; {eta})"
        )

    def __call__(self, record: EpochRecord) -> None:
        self.seconds.append(record.seconds)
        self.emit(self.line(record))


def is_terminal(stream: IO[str]) -> bool:
    """Whether `stream` is an interactive terminal (progress bars) rather than a file or pipe."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """Progress of `total` items on `stream` (default stderr): a tqdm bar on a terminal; else a plain
    line `description: done/total (elapsed, ETA ...)` every `PLAIN_EVERY_PERCENT` % and at the end.

    Use as a context manager and call `advance()` as each item is done (e.g. from a callback).
    """

    def __init__(self, total: int, description: str, stream: IO[str] | None = None) -> None:
        self.total, self.description = total, description
        self.stream = sys.stderr if stream is None else stream
        self.done = 0
        self.start = time.perf_counter()
        self.step = max(1, math.ceil(total * PLAIN_EVERY_PERCENT / 100))
        self.bar: tqdm | None = None
        if is_terminal(self.stream):
            self.bar = tqdm(total=total, desc=description, file=self.stream, dynamic_ncols=True)

    def advance(self, n: int = 1) -> None:
        """Count `n` more items done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.done % self.step < n or self.done == self.total:
            elapsed = time.perf_counter() - self.start
            eta = elapsed / self.done * max(self.total - self.done, 0)
            print(
                f"{self.description}: {self.done}/{self.total} "
                f"({format_duration(elapsed)}, ETA {format_duration(eta)})",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(items: Iterable[T], total: int, description: str, stream: IO[str] | None = None) -> Iterator[T]:
    """Yield `items` while a `Progress` counts them (a bar on a terminal, plain lines otherwise)."""
    with Progress(total, description, stream) as shown:
        for item in items:
            yield item
            shown.advance()
