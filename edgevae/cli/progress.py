"""Rich progress rendering for long library calls (the library itself never prints)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def make_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


@contextlib.contextmanager
def stage_progress(console: Console) -> Iterator[Callable[[str, int, int], None]]:
    """A (stage, done, total) callback with one bar per stage. Nothing is drawn until the
    first report, so a call that fails its checks prints one error line and no bar."""
    with contextlib.ExitStack() as stack:
        bars: list[Progress] = []
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if not bars:
                bars.append(stack.enter_context(make_progress(console)))
            if stage not in tasks:
                tasks[stage] = bars[0].add_task(stage, total=total or None, info="")
            bars[0].update(tasks[stage], completed=done, total=total or None)

        yield progress


class TrainProgress:
    """A bar per epoch with the running loss; a summary line when the epoch ends."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = make_progress(console)
        self.task = None
        self.running = 0.0
        self.count = 0
        self.started = False

    def __enter__(self) -> TrainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int, n_batches: int, done: int) -> None:
        if not self.started:  # started lazily: a failed option check prints no empty bar
            self.progress.__enter__()
            self.started = True
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.running, self.count = 0.0, 0
        self.task = self.progress.add_task(
            f"epoch {epoch}/{epochs}", total=n_batches, completed=done, info=""
        )

    def step(self, loss: float) -> None:
        # Exponential moving average: the bar shows the trend, not one noisy batch.
        self.count += 1
        self.running = loss if self.count == 1 else 0.95 * self.running + 0.05 * loss
        self.progress.update(self.task, advance=1, info=f"loss {self.running:8.2f}")

    def end_epoch(self, row: dict[str, Any]) -> None:
        self.progress.update(self.task, info=f"loss {row['train_neg_elbo']:8.2f}")
        self.progress.console.print(
            f"epoch {row['epoch']:>3}: train -ELBO {row['train_neg_elbo']:.2f}  "
            f"valid -ELBO {row['valid_neg_elbo']:.2f} nats  "
            f"({row['epoch_seconds']:.1f} s, {row['images_per_s']:.0f} img/s)",
            highlight=False,
        )


class CountProgress:
    """A single bar for work counted in items (images scored, samples calibrated).

    Without a terminal (a log file, nohup, CI) the bar cannot redraw, so a plain line is
    printed at every tenth of the work instead: a 45-minute eval is not silent.
    """

    def __init__(self, console: Console, description: str):
        self.console = console
        self.plain = not console.is_terminal
        self.progress = make_progress(console)
        self.progress.disable = self.plain
        self.description = description
        self.task = None
        self.tenths_shown = 0
        self.started = time.monotonic()

    def __enter__(self) -> CountProgress:
        self.progress.__enter__()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, done: int, total: int) -> None:
        if self.plain:
            tenths = done * 10 // max(total, 1)
            if tenths > self.tenths_shown:
                self.tenths_shown = tenths
                elapsed = time.monotonic() - self.started
                left = elapsed * (total - done) / max(done, 1)
                self.console.print(
                    f"{self.description}: {done:,}/{total:,} ({elapsed:.0f} s, ~{left:.0f} s left)",
                    highlight=False,
                )
            return
        if self.task is None:
            self.task = self.progress.add_task(self.description, total=total, info="")
        self.progress.update(self.task, completed=done)


def fetch_named(data: str | None, console: Console | None = None) -> None:
    """Download a named data set that is not in the cache yet, with a progress bar (the
    library call that reads it afterwards finds it there)."""
    from ..data.named import download, is_named

    if data is None or not is_named(data):
        return
    from .common import err_console

    with stage_progress(console or err_console) as progress:
        download(data, progress=progress)
