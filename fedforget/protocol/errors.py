"""Why a run stops: errors the round protocol raises rather than report results
that would look complete."""

from __future__ import annotations


class ClientFailure(RuntimeError):
    """A client replied with an error; the run stops rather than aggregate a
    partial round that would look complete."""


class DivergenceError(RuntimeError):
    """An arm's training produced non-finite weights or losses; the run stops
    rather than report NaN metrics as results."""


class RunsFailed(RuntimeError):
    """Some of several scenarios run in one runtime failed (the others ran).

    ``failures``: (run directory, error) of each failed run."""

    def __init__(self, failures: list[tuple[str, BaseException]]) -> None:
        self.failures = failures
        super().__init__(f"{len(failures)} run(s) failed: "
                         + "; ".join(f"{out}: {err}" for out, err in failures))
