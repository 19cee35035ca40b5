"""Figures and self-contained HTML reports, drawn from :mod:`fedforget.analysis`.

- :mod:`~fedforget.report.run`: the report of a run or a multi-seed directory.
- :mod:`~fedforget.report.study`: the report of a sweep study.
- :mod:`~fedforget.report.verdicts`: the run report's paired verdicts, relapse
  and the client-level test's "detected / not detected" with its power.
- :mod:`~fedforget.report.figures` and :mod:`~fedforget.report.html`: the pieces.

``write_report(path)`` writes ``path/report.html`` for any of the three.
"""

from fedforget.report.run import render_report, write_report
from fedforget.report.study import render_study_report, write_study_report

__all__ = ["render_report", "render_study_report", "write_report", "write_study_report"]
