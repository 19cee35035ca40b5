"""Loading and statistics: everything that reads a run, a multi-seed directory
or a sweep study back and computes the numbers reports show.

- :mod:`~fedforget.analysis.tables`: ``load(path)`` -> :class:`Results` (tidy
  pandas tables with helpers), exports, the study table and the data dictionary.
- :mod:`~fedforget.analysis.runs`: :class:`Run` / :class:`Study` (``load_run``,
  ``load_study``), one report's runs with per-arm, round and client estimates.
- :mod:`~fedforget.analysis.stats`: :class:`Estimate`, t-intervals, ``across``,
  and ``SIGNAL_AUC``, the project's one "the oracle sees the client" threshold.
- :mod:`~fedforget.analysis.verdicts`: paired verdicts against retrain
  (:class:`PairedVerdict`, ``paired_verdict``) and their margins, declared once
  in ``VERDICT_MARGINS``; ``Results.verdicts()`` and ``Results.relapse()`` use them.
- :mod:`~fedforget.analysis.outcomes`: a withdrawn client's outcome values, ROC
  points and the cost–forgetting frontier's coordinates.

Figures and HTML live in :mod:`fedforget.report`, built on these.
"""

from fedforget.analysis.runs import Run, Study, load_run, load_study
from fedforget.analysis.stats import SIGNAL_AUC, Estimate, across, t_interval
from fedforget.analysis.tables import (
           METRICS,
           Results,
           data_dictionary,
           export,
           load,
           study_table,
)
from fedforget.analysis.verdicts import VERDICT_MARGINS, PairedVerdict, paired_verdict

__all__ = ["METRICS", "SIGNAL_AUC", "VERDICT_MARGINS", "Estimate", "PairedVerdict", "Results", "Run", "Study",
           "across", "data_dictionary", "export", "load", "load_run", "load_study", "paired_verdict", "study_table",
           "t_interval"]
