"""Forsaken: server-side neuron-mask unlearning (Ma et al., "Learn to Forget:
Machine Unlearning via Neuron Masking", arXiv 2003.10933, IEEE TDSC 2022).

Confirmed by the sources (``reference/METHODS.md`` section 1): a trainable
mask / dummy-gradient generator produces updates that stimulate neurons so the
model forgets the data; no retraining; in FL the result travels as an ordinary
update; the paper reports FR above 90% with under 5% accuracy loss. The method
section could not be read, so the concrete design is ours, in four parts:

- :mod:`.masks`: which neurons may change (saliency from the client's gradients);
- :mod:`.objective`: what "forgotten" means per sample, and retention;
- :mod:`.generator`: how gradients become a step (``identity`` or ``learned``);
- :mod:`.method`: the one loop, its client operations, stop rule and guard.
"""

from fedforget.unlearning.forsaken.generator import (
    IdentityGenerator,
    LearnedGenerator,
    meta_train,
    proxy_tasks,
)
from fedforget.unlearning.forsaken.masks import (
    NeuronMask,
    neuron_layers,
    neuron_saliency,
)
from fedforget.unlearning.forsaken.method import Forsaken, ForsakenParams
from fedforget.unlearning.forsaken.objective import (
    forgetting_gradient,
    logit_confidence,
    matched_targets,
    membership_auc,
    membership_loss,
    retention_gradient,
)

__all__ = [
    "Forsaken",
    "ForsakenParams",
    "IdentityGenerator",
    "LearnedGenerator",
    "NeuronMask",
    "forgetting_gradient",
    "logit_confidence",
    "matched_targets",
    "membership_auc",
    "membership_loss",
    "meta_train",
    "neuron_layers",
    "neuron_saliency",
    "proxy_tasks",
    "retention_gradient",
]
