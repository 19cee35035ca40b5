"""Progress over rounds, one line per scenario with each arm's test accuracy:
a rich bar in a terminal, an HTML table updated in place in a Jupyter notebook.

The notebook view uses IPython's display updates (no ipywidgets); they may come
from the thread a runtime runs the ServerApp in (tested in a real kernel).
"""

from __future__ import annotations

import html
import sys
import threading
import time
from collections.abc import Callable

from fedforget.config import Scenario

ProgressFn = Callable[[int, dict[str, float]], None]
NOTEBOOK_REFRESH_S = 0.25  # at most this often; the last update is always shown


def in_notebook() -> bool:
    """Inside a Jupyter kernel (IPython's ZMQ shell, or Colab's)?"""
    ipython = sys.modules.get("IPython")  # never imported outside IPython: no kernel
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and (type(shell).__name__ == "ZMQInteractiveShell" or "colab" in type(shell).__module__)


def _elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"


def _accuracies(accs: dict[str, float]) -> str:
    return "test acc: " + "  ".join(f"{a} {v:.3f}" for a, v in accs.items())


class TerminalProgress:
    """A rich progress bar (a live display in a terminal; plain lines in a log)."""

    def __init__(self, scenarios: list[Scenario]) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[acc]}"))
        self.tasks = [self.progress.add_task(f"{s.name} (seed {s.seed})", total=s.train.rounds,
                                             acc="starting runtime") for s in scenarios]

    def start(self) -> None:
        self.progress.start()

    def relabel(self, labels: list[str]) -> None:
        for task, label in zip(self.tasks, labels, strict=True):
            self.progress.update(task, description=label)

    def stop(self) -> None:
        self.progress.stop()

    def callback(self, i: int) -> ProgressFn:
        def cb(rnd: int, accs: dict[str, float]) -> None:
            self.progress.update(self.tasks[i], completed=rnd, acc=_accuracies(accs))

        return cb


class _View:
    """What the notebook shows: HTML, with a plain-text fallback."""

    def __init__(self, rows: list[list], elapsed: float) -> None:
        self.rows, self.elapsed = [list(r) for r in rows], elapsed

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><td>{html.escape(name)}</td><td><progress value='{done}' max='{total}'></progress></td>"
            f"<td>{done}/{total}</td><td>{html.escape(acc)}</td></tr>"
            for name, done, total, acc in self.rows
        )
        return (f"<table class='fedforget-progress'><tr><th>scenario</th><th></th><th>rounds</th>"
                f"<th>{_elapsed(self.elapsed)}</th></tr>{body}</table>")

    def __repr__(self) -> str:
        return "\n".join(f"{name}  {done}/{total}  {_elapsed(self.elapsed)}  {acc}"
                         for name, done, total, acc in self.rows)


class NotebookProgress:
    """One table updated in place in the notebook cell that started the run."""

    def __init__(self, scenarios: list[Scenario]) -> None:
        self.rows = [[f"{s.name} (seed {s.seed})", 0, s.train.rounds, "starting runtime"] for s in scenarios]
        self._lock = threading.Lock()
        self._t0 = self._shown = 0.0
        self._handle = None

    def relabel(self, labels: list[str]) -> None:
        for row, label in zip(self.rows, labels, strict=True):
            row[0] = label

    def start(self) -> None:
        from IPython.display import display

        self._t0 = time.monotonic()
        self._handle = display(_View(self.rows, 0.0), display_id=True)

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._handle is None or (not force and now - self._shown < NOTEBOOK_REFRESH_S):
            return
        self._shown = now
        self._handle.update(_View(self.rows, now - self._t0))

    def stop(self) -> None:
        with self._lock:
            self._show(force=True)

    def callback(self, i: int) -> ProgressFn:
        def cb(rnd: int, accs: dict[str, float]) -> None:
            with self._lock:
                self.rows[i][1:] = [rnd, self.rows[i][2], _accuracies(accs)]
                self._show(force=rnd == self.rows[i][2])

        return cb


class LogProgress:
    """Output redirected to a file or a pipe: one whole line per round (a live bar
    there would be cut to the terminal width the log never had)."""

    def __init__(self, scenarios: list[Scenario], stream=None) -> None:
        self.names = [f"{s.name} (seed {s.seed})" for s in scenarios]
        self.totals = [s.train.rounds for s in scenarios]
        self.stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()
        self._t0 = 0.0

    def relabel(self, labels: list[str]) -> None:
        self.names = list(labels)

    def start(self) -> None:
        self._t0 = time.monotonic()

    def stop(self) -> None:
        self.stream.flush()

    def callback(self, i: int) -> ProgressFn:
        def cb(rnd: int, accs: dict[str, float]) -> None:
            with self._lock:
                print(f"{self.names[i]}  round {rnd}/{self.totals[i]}  {_elapsed(time.monotonic() - self._t0)}  "
                      f"{_accuracies(accs)}", file=self.stream, flush=True)

        return cb


def progress_bar(scenarios: list[Scenario], labels: list[str] | None = None
                 ) -> TerminalProgress | NotebookProgress | LogProgress:
    """The notebook view inside a Jupyter kernel, the rich bar in a terminal,
    and whole lines per round when output goes to a file or a pipe. ``labels``
    name the runs (default: scenario name and seed)."""
    if in_notebook():
        bar = NotebookProgress(scenarios)
    else:
        bar = TerminalProgress(scenarios) if sys.stdout.isatty() else LogProgress(scenarios)
    if labels is not None:
        bar.relabel(labels)
    return bar
