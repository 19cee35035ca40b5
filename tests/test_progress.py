"""Notebooks, in a real kernel run by nbclient: the progress table updated in
place (also from another thread), a result's HTML summary and its plot; and
the rich bar in a terminal."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from fedforget.progress import (
    NotebookProgress,
    TerminalProgress,
    in_notebook,
    progress_bar,
)
from tests.conftest import require_tool, tiny

ROOT = Path(__file__).resolve().parent.parent

RUN_CELL = """
import fedforget
from tests.conftest import tiny
result = fedforget.run(tiny(events=[{{"round": 2, "client": 1}}], unlearning={{"methods": ["none"]}}),
                       out={out!r}, progress=True)
"""
SUMMARY_CELL = "result"
PLOT_CELL = "result.plot(client=1);"
THREAD_CELL = """
import threading
from fedforget.progress import progress_bar
bar = progress_bar([tiny(name="threaded")])
bar.start()
worker = threading.Thread(target=bar.callback(0), args=(3, {{"original": 0.5, "retrain": 0.25}}))
worker.start(); worker.join()  # no bar.stop(): the thread's own update must reach the cell
"""


def _has_kernel(name: str) -> bool:
    from jupyter_client.kernelspec import KernelSpecManager

    return name in KernelSpecManager().find_kernel_specs()


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    require_tool(_has_kernel("python3"), "no 'python3' Jupyter kernel (pip install ipykernel)")
    out = tmp_path_factory.mktemp("nb") / "run"
    cells = [RUN_CELL.format(out=str(out)), THREAD_CELL.format(), SUMMARY_CELL, PLOT_CELL]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    return nb


def _displays(cell) -> list[dict]:
    return [o for o in cell.outputs if o.output_type == "display_data"]


def test_notebook_run_shows_one_table_updated_to_the_last_round(executed):
    cell = executed.cells[0]
    (shown,) = _displays(cell)  # one display, updated in place (no ipywidgets needed)
    page = shown.data["text/html"]
    assert "<progress value='3' max='3'>" in page and "tiny (seed 3)" in page and "test acc: original" in page
    assert "tiny (seed 3)  3/3" in shown.data["text/plain"]
    # rich's live display would want ipywidgets; this view does not (tqdm's import-time note from the
    # datasets library is not ours).
    errors = "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr")
    assert 'install "ipywidgets"' not in errors and "Traceback" not in errors


def test_notebook_updates_from_another_thread_reach_the_cell(executed):
    (shown,) = _displays(executed.cells[1])
    assert "<progress value='3' max='3'>" in shown.data["text/html"]
    assert "threaded (seed 3)  3/3" in shown.data["text/plain"] and "retrain 0.250" in shown.data["text/plain"]


def test_a_result_shows_its_summary_and_plots_its_curves(executed):
    (summary,) = [o for o in executed.cells[2].outputs if o.output_type == "execute_result"]
    page = summary.data["text/html"]
    assert "fedforget run" in page and "Final MIA AUC gap to retrain" in page and "<td>none</td>" in page
    (figure,) = _displays(executed.cells[3])
    assert figure.data["image/png"]  # matplotlib's inline backend drew the curves


def test_terminal_gets_the_rich_bar(capsys, monkeypatch):
    assert not in_notebook()
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    bar = progress_bar([tiny()])
    assert isinstance(bar, TerminalProgress)
    bar.start()
    bar.callback(0)(2, {"original": 0.75})
    bar.stop()
    task = bar.progress.tasks[0]
    assert (task.completed, task.total, task.fields["acc"]) == (2, 3, "test acc: original 0.750")


def test_notebook_view_without_a_kernel_is_not_chosen():
    assert not isinstance(progress_bar([tiny()]), NotebookProgress)


def test_redirected_output_gets_one_whole_line_per_round(capsys):
    from fedforget.progress import LogProgress

    bar = progress_bar([tiny(name="a-rather-long-scenario-name-that-a-bar-would-cut", seed=7)])
    assert isinstance(bar, LogProgress)  # capsys: stdout is not a terminal
    bar.start()
    for rnd in (1, 2, 3):
        bar.callback(0)(rnd, {"original": 0.5 + rnd / 10, "retrain": 0.25, "forsaken": 0.125})
    bar.stop()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[2].startswith("a-rather-long-scenario-name-that-a-bar-would-cut (seed 7)  round 3/3")
    assert lines[2].endswith("test acc: original 0.800  retrain 0.250  forsaken 0.125")


def test_sweep_progress_lines_name_the_cell(tmp_path, capsys):
    from fedforget.runner import run_many

    runs = [tiny(name="cells", seed=s) for s in (3, 4)]
    outs = [tmp_path / "study" / "cell-001" / f"seed-{s.seed}" for s in runs]
    run_many(runs, outs, "inline", True, False)
    lines = [line for line in capsys.readouterr().out.splitlines() if " round " in line]
    assert any(line.startswith("cells cell-001/seed-3  round 3/3") for line in lines)
    assert any(line.startswith("cells cell-001/seed-4  round 3/3") for line in lines)
