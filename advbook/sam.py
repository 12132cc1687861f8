"""Sharpness-aware minimisation (SAM, Foret et al. 2021) wrapping any PyTorch optimizer.

SAM minimises the worst loss in an ℓ2 ball of radius ρ around the weights,
min_θ max_{‖δ‖₂ <= ρ} L(θ + δ). To first order the inner maximiser is

    ε̂(θ) = ρ · ∇L(θ) / ‖∇L(θ)‖₂,

and one SAM update with base optimizer ``base`` is

    1. g = ∇L_B(θ) on the mini-batch B; perturb θ ← θ + ε̂ (the *first step*);
    2. g_SAM = ∇L_B(θ + ε̂); restore θ and let the base optimizer step with g_SAM
       (the *second step*); for plain SGD: θ' = θ − lr·∇L_B(θ + ε̂).

With ``adaptive=True`` it is ASAM (Kwon et al. 2021): ``ε̂ = ρ·T²g/‖Tg‖₂`` with
``T = diag(|θ|)``, which makes the neighbourhood scale invariant per weight.

Derived in the book, section :ref:`sec-sam` of chapter *Flat minima*.

Three ways to use it::

    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)

    # 1. a closure (re-evaluated twice per step, as for LBFGS)
    def closure():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss
    opt.step(closure)

    # 2. explicit steps
    F.cross_entropy(model(x), y).backward(); opt.first_step(zero_grad=True)
    F.cross_entropy(model(x), y).backward(); opt.second_step(zero_grad=True)

    # 3. with the book's training loop
    fit(model, x, y, optimizer=opt, objective=opt.objective(model))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ._core.checks import check_nonneg_float

__all__ = ["SAM"]


@contextmanager
def _frozen_batchnorm_stats(model: nn.Module) -> Iterator[None]:
    """Keep BatchNorm running statistics unchanged during a forward pass (momentum 0)."""
    saved = []
    for m in model.modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            nbt = m.num_batches_tracked
            saved.append((m, m.momentum, None if nbt is None else nbt.clone()))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, nbt in saved:
            m.momentum = momentum
            if nbt is not None and m.num_batches_tracked is not None:
                m.num_batches_tracked.copy_(nbt)


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimisation around any base optimizer (Foret et al. 2021).

    The base optimizer is built on the same parameter groups (``base_optimizer(param_groups,
    **base_kwargs)``), so learning-rate schedulers and ``zero_grad`` act on both; every group
    carries SAM's ``rho`` and ``adaptive`` next to the base optimizer's options. ε̂ is
    computed from the gradient norm over *all* parameters with a gradient:
    ε̂ = ρ·g/(‖g‖₂ + 1e-12), or ρ·T²g/(‖Tg‖₂ + 1e-12) with ``T = |θ|`` for ASAM. Derived in the book,
    section :ref:`sec-sam` of chapter *Flat minima*.

    Args:
        params: parameters or parameter groups (a group may override ``rho``).
        base_optimizer: an optimizer class or factory, e.g. ``torch.optim.SGD``.
        rho: radius ρ > 0 of the neighbourhood (ρ = 0 reduces SAM to the base optimizer).
        adaptive: use ASAM's scale-invariant neighbourhood.
        **base_kwargs: options of the base optimizer (``lr``, ``momentum``, ``weight_decay``…).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        base_optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.SGD,
        *,
        rho: float = 0.05,
        adaptive: bool = False,
        **base_kwargs: Any,
    ) -> None:
        rho = check_nonneg_float(rho, "rho")
        if not callable(base_optimizer):
            raise TypeError(
                "base_optimizer must be an optimizer class or factory such as "
                f"torch.optim.SGD, got {type(base_optimizer).__name__}"
            )
        if isinstance(base_optimizer, torch.optim.Optimizer):
            raise TypeError(
                "base_optimizer must be an optimizer *class* or factory (e.g. "
                "torch.optim.SGD), not an instance; pass its options as keywords"
            )
        super().__init__(params, {"rho": rho, "adaptive": bool(adaptive), **base_kwargs})
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        if not isinstance(self.base_optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"base_optimizer(...) must return a torch.optim.Optimizer, got "
                f"{type(self.base_optimizer).__name__}"
            )
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self._perturbed = False

    # ------------------------------------------------------------------ the two steps

    def _current_gradients(self) -> dict[torch.Tensor, torch.Tensor]:
        """``{param: param.grad}`` over every parameter of every group that has a gradient."""
        return {
            p: grad for g in self.param_groups for p in g["params"] if (grad := p.grad) is not None
        }

    @torch.no_grad()
    def _perturbation(self, grads: dict[torch.Tensor, torch.Tensor]) -> None:
        """θ ← θ + ε̂ from gradients ``{param: grad}``; remembers θ for :meth:`second_step`."""
        if self._perturbed:
            raise RuntimeError("SAM.first_step called twice without second_step in between")
        if not grads:
            raise RuntimeError("SAM.first_step needs gradients: call loss.backward() first")
        groups = {id(p): g for g in self.param_groups for p in g["params"]}
        scaled = [(p.abs() * gp if groups[id(p)]["adaptive"] else gp) for p, gp in grads.items()]
        device = next(iter(grads)).device
        norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(s).to(device) for s in scaled])
        )
        for p, gp in grads.items():
            group = groups[id(p)]
            e_w = gp * (group["rho"] / (norm.to(p.device) + 1e-12))
            if group["adaptive"]:
                e_w = e_w * p * p
            self.state[p]["old_p"] = p.detach().clone()
            p.add_(e_w.to(p.dtype))
        self._perturbed = True

    def first_step(self, zero_grad: bool = False) -> None:
        """Move to the perturbed weights θ + ε̂ using the gradients currently in ``.grad``."""
        self._perturbation(self._current_gradients())
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore θ and take the base optimizer's step with the gradients at θ + ε̂."""
        if not self._perturbed:
            raise RuntimeError("SAM.second_step called before first_step")
        self.restore()
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def restore(self) -> None:
        """Undo a pending first step (θ + ε̂ → θ) without updating; a no-op when none is pending.

        Use it to recover the unperturbed weights if an error interrupts a SAM step.
        """
        for group in self.param_groups:
            for p in group["params"]:
                old = self.state[p].pop("old_p", None) if p in self.state else None
                if old is not None:
                    p.copy_(old)
        self._perturbed = False

    @property
    def perturbed(self) -> bool:
        """Whether the parameters are currently at θ + ε̂ (between the two steps)."""
        return self._perturbed

    # Optimizer.step is typed with overloads (closure=None -> None) that a SAM step, which returns
    # the closure's loss tensor, cannot match.
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        """One SAM update.

        * With a ``closure`` (which computes the loss on the current batch, calls ``backward`` and
          returns the loss): gradients are zeroed, the closure is evaluated at θ, the first step
          taken, the closure evaluated again at θ + ε̂, and the second step taken. Returns the
          loss at θ.
        * Without a closure, after :meth:`first_step` (as arranged by :meth:`objective`): the
          second step. Returns ``None``.
        """
        if closure is None:
            if not self._perturbed:
                raise RuntimeError(
                    "SAM.step() needs a closure that recomputes the loss (step(closure)), or a "
                    "preceding first_step(); with advbook.train.fit pass "
                    "objective=optimizer.objective(model)"
                )
            self.second_step()
            return None
        closure = torch.enable_grad()(closure)
        self.zero_grad(set_to_none=True)
        loss = closure()
        self.first_step(zero_grad=True)
        try:
            closure()
        except BaseException:
            self.restore()
            raise
        self.second_step()
        return loss

    # ------------------------------------------------------------------ fit integration

    def objective(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
        *,
        freeze_batchnorm_stats: bool = True,
    ) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """An ``objective`` for :func:`advbook.train.fit` that performs the first SAM step itself.

        Called on a batch it computes g = ∇L_B(θ) with ``torch.autograd.grad`` (no ``.grad`` is
        written), moves the weights to θ + ε̂ and returns the loss at θ + ε̂ (so ``train_loss`` is
        the SAM loss) together with the logits at θ (so ``train_acc`` is the accuracy of θ). ``fit``
        then back-propagates that loss and calls ``optimizer.step()``, which restores θ and takes
        the base step: exactly one SAM update per batch. With ``freeze_batchnorm_stats`` the
        forward pass at θ + ε̂ leaves BatchNorm running statistics untouched.
        """
        params = [p for g in self.param_groups for p in g["params"]]
        owned = {id(p) for p in params}
        if not any(id(p) in owned for p in model.parameters()):
            raise ValueError("model shares no parameters with this SAM optimizer")

        def sam_objective(
            m: nn.Module, x: torch.Tensor, y: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            if m is not model:
                raise ValueError("this SAM objective was built for a different model")
            logits = m(x)
            loss = loss_fn(logits, y)
            active = [p for p in params if p.requires_grad]
            grads = torch.autograd.grad(loss, active, allow_unused=True)
            self._perturbation({p: g for p, g in zip(active, grads, strict=True) if g is not None})
            try:
                if freeze_batchnorm_stats:
                    with _frozen_batchnorm_stats(m):
                        perturbed_loss = loss_fn(m(x), y)
                else:
                    perturbed_loss = loss_fn(m(x), y)
            except BaseException:
                self.restore()
                raise
            return perturbed_loss, logits.detach()

        return sam_objective

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict (its groups carry ``rho`` and ``adaptive``)."""
        if self._perturbed:
            raise RuntimeError("cannot save SAM's state between first_step and second_step")
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict produced by :meth:`state_dict`."""
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
