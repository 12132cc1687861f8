"""Adversarial training (chapter *Adversarial training*): recipes for :func:`advbook.train.fit`.

Each recipe is an ``objective(model, x, y) -> (loss, logits)`` for ``fit(..., objective=...)``
(one module per method):

* :func:`mixed_objective` — Goodfellow et al. (2015), ``α·CE(clean) + (1−α)·CE(FGSM)``;
* :func:`fgsm_at_objective` — FGSM-AT with a random start (Wong et al. 2020, "fast is better
  than free");
* :func:`pgd_at_objective` — PGD-AT (Madry et al. 2018);
* :func:`trades_objective` — TRADES (Zhang et al. 2019), with its inner maximisation
  :func:`trades_perturb`;
* :class:`CatastrophicOverfittingDetector` — an ``epoch_callbacks`` entry that warns when the
  PGD accuracy collapses while the FGSM accuracy stays high;
* :class:`EpsilonRamp` — an ``epoch_callbacks`` entry that grows the training ε linearly;
* :func:`gaussian_augmentation_objective`, :func:`consistency_objective`,
  :func:`smoothadv_objective` — training for randomized smoothing (:mod:`advbook.certify`):
  Gaussian augmentation (Cohen et al. 2019), consistency regularisation (Jeong & Shin 2020) and
  SmoothAdv (Salman et al. 2019).

Adversarial examples are generated with the model in eval mode; the loss passes run in train
mode. Each docstring says which batches the BatchNorm running statistics come from. Recipes
with a ``generator`` expose ``state_dict()``/``load_state_dict()``, which ``fit`` stores in its
checkpoints.
"""

from __future__ import annotations

from .fgsm_at import FGSMATObjective, fgsm_at_objective
from .mixed import MixedObjective, mixed_objective
from .overfitting import CatastrophicOverfittingDetector
from .pgd_at import PGDATObjective, pgd_at_objective
from .schedule import EpsilonRamp
from .smoothing import (
    ConsistencyObjective,
    GaussianAugmentationObjective,
    SmoothAdvObjective,
    consistency_objective,
    gaussian_augmentation_objective,
    smoothadv_objective,
)
from .trades import TRADESObjective, trades_objective, trades_perturb

__all__ = [
    "CatastrophicOverfittingDetector",
    "ConsistencyObjective",
    "EpsilonRamp",
    "FGSMATObjective",
    "GaussianAugmentationObjective",
    "MixedObjective",
    "PGDATObjective",
    "SmoothAdvObjective",
    "TRADESObjective",
    "consistency_objective",
    "fgsm_at_objective",
    "gaussian_augmentation_objective",
    "mixed_objective",
    "pgd_at_objective",
    "smoothadv_objective",
    "trades_objective",
    "trades_perturb",
]
