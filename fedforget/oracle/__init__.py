"""Membership oracle: per-sample statistics, attacks, metrics and the frozen oracle."""

from fedforget.oracle.attacks import (
    ATTACKS,
    Attack,
    LiraAttack,
    LossThresholdAttack,
    PopulationAttack,
    best_balanced_threshold,
    get_attack,
    lira_offline_score,
    lira_score,
)
from fedforget.oracle.features import SampleStats, sample_statistics, stats_from_logits
from fedforget.oracle.metrics import (
    MIN_COUNT_FACTOR,
    TPR_FPR_LEVELS,
    auc_interval,
    balanced_accuracy,
    bootstrap_interval,
    forgetting_rate,
    fr_at_fixed_fpr,
    fr_interval,
    min_nonmembers_for_fpr,
    roc_metrics,
    threshold_at_fpr,
    tpr_at_fpr,
    withheld_tpr_notes,
)
from fedforget.oracle.oracle import MembershipOracle, OracleReport
from fedforget.oracle.sampling import class_matched_nonmembers, largest_remainder_counts

__all__ = [
    "ATTACKS",
    "Attack",
    "LiraAttack",
    "LossThresholdAttack",
    "MIN_COUNT_FACTOR",
    "MembershipOracle",
    "OracleReport",
    "PopulationAttack",
    "SampleStats",
    "TPR_FPR_LEVELS",
    "auc_interval",
    "balanced_accuracy",
    "best_balanced_threshold",
    "bootstrap_interval",
    "class_matched_nonmembers",
    "forgetting_rate",
    "fr_at_fixed_fpr",
    "fr_interval",
    "get_attack",
    "largest_remainder_counts",
    "lira_offline_score",
    "lira_score",
    "min_nonmembers_for_fpr",
    "roc_metrics",
    "sample_statistics",
    "stats_from_logits",
    "threshold_at_fpr",
    "tpr_at_fpr",
    "withheld_tpr_notes",
]
