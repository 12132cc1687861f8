"""Certified robustness: guarantees that no ℓ2 perturbation below a radius changes a prediction.

* Randomized smoothing (Cohen, Rosenfeld & Kolter 2019), ``advbook.certify.smoothing``:
  :func:`smoothed_predict` (PREDICT, abstains with ``-1``), :func:`certify` (CERTIFY: a class
  and a radius ``σ·Φ⁻¹(p̲_A)`` that hold with probability ``1 − α``) and
  :func:`certified_accuracy` (the curve of certified accuracy against radius) with its area
  :func:`average_certified_radius`. The base model
  should be trained with Gaussian input noise of the same ``σ`` (section :ref:`sec-input-noise`;
  recipes in :mod:`advbook.defenses`, section :ref:`sec-training-for-smoothing`). The book's
  chapter :ref:`ch-certified-robustness` derives and uses every function here.
* Lipschitz-margin certificates (Tsuzuku, Sato & Sugiyama 2018),
  ``advbook.certify.lipschitz``: :func:`lipschitz_upper_bound` (product of the layers'
  spectral norms, convolutions by Lanczos iteration) and :func:`lipschitz_certificate` (radius
  ``margin / (√2·L)``, deterministic).

Random numbers: every function that draws them takes an optional seeded ``torch.Generator``;
draws are made on the generator's device and moved to the data's, so a CPU generator gives the
same noise, and the same certificates, on CPU and CUDA.
"""

from __future__ import annotations

from .lipschitz import lipschitz_certificate, lipschitz_upper_bound
from .smoothing import average_certified_radius, certified_accuracy, certify, smoothed_predict

__all__ = [
    "average_certified_radius",
    "certified_accuracy",
    "certify",
    "lipschitz_certificate",
    "lipschitz_upper_bound",
    "smoothed_predict",
]
