"""The per-sample worst case of an iterative attack and the shrink-the-batch bookkeeping.

Every iterative attack keeps, per sample, the point that is worst for the model so far: a point
that fools it beats one that does not, and among equals the higher objective wins. With early
stopping a sample leaves the active batch at its first fooling point (``retire_fooled``) and a
later restart attacks only the samples not yet fooled (``rows_to_attack``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .balls import per_sample

__all__ = ["WorstCase", "retire_fooled", "rows_to_attack", "worse_for_model"]


def worse_for_model(
    fooled: Tensor, objective: Tensor, ref_fooled: Tensor, ref_objective: Tensor
) -> Tensor:
    """Per sample, ``(fooled, objective)`` beats the reference lexicographically: fooling the
    model first, then a higher objective."""
    return (fooled & ~ref_fooled) | ((fooled == ref_fooled) & (objective > ref_objective))


@dataclass
class WorstCase:
    """Per sample, the worst-for-the-model point found so far, whether it fools the model, its
    objective (``−inf`` before any point was judged) and whether every input gradient computed
    for it so far vanished (``masked``, ``True`` before any)."""

    x: Tensor
    fooled: Tensor
    objective: Tensor
    masked: Tensor

    @classmethod
    def start(cls, x: Tensor) -> WorstCase:
        """Nothing judged yet: ``x`` itself, not fooling, objective ``−inf``."""
        n = x.shape[0]
        return cls(
            x=x.clone(),
            fooled=torch.zeros(n, dtype=torch.bool, device=x.device),
            objective=torch.full((n,), -torch.inf, dtype=x.dtype, device=x.device),
            masked=torch.ones(n, dtype=torch.bool, device=x.device),
        )

    def update(self, x: Tensor, fooled: Tensor, objective: Tensor) -> None:
        """Keep, per sample, the worse for the model of the stored point and ``x``."""
        better = worse_for_model(fooled, objective, self.fooled, self.objective)
        self.x = torch.where(per_sample(better, x), x, self.x)
        self.fooled = self.fooled | fooled
        self.objective = torch.where(better, objective, self.objective)

    def select(self, rows: Tensor) -> WorstCase:
        """The entries of the samples ``rows``."""
        return WorstCase(self.x[rows], self.fooled[rows], self.objective[rows], self.masked[rows])

    def merge_into(self, overall: WorstCase, rows: Tensor) -> None:
        """Merge these entries into ``overall`` at ``rows`` (in place), keeping the worse case."""
        better = worse_for_model(
            self.fooled, self.objective, overall.fooled[rows], overall.objective[rows]
        )
        overall.x[rows] = torch.where(per_sample(better, self.x), self.x, overall.x[rows])
        overall.objective[rows] = torch.where(better, self.objective, overall.objective[rows])
        overall.fooled[rows] = overall.fooled[rows] | self.fooled
        overall.masked[rows] = overall.masked[rows] & self.masked


def rows_to_attack(worst: WorstCase, restart: int, early_stop: bool) -> Tensor:
    """The samples a restart attacks: all of them, or with ``early_stop`` those not yet fooled."""
    if early_stop and restart > 0:
        return (~worst.fooled).nonzero().squeeze(1)
    return torch.arange(worst.x.shape[0], device=worst.x.device)


def retire_fooled(run: WorstCase, rows: Tensor, overall: WorstCase) -> Tensor:
    """Merge the samples ``run`` has fooled into ``overall``; return the positions of the rest."""
    done = run.fooled.nonzero().squeeze(1)
    run.select(done).merge_into(overall, rows[done])
    return (~run.fooled).nonzero().squeeze(1)
