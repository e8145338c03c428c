r"""Choosing ε₀ from sampled gradients (the seed report's proposal, ``optim.lr=auto``).

Evaluate ∇loss at many guesses θ_i in the initial box and take the largest ε₀ for which
no sampled first step is longer than a target length T:

    step_i(ε₀) = ε_i ‖∇loss(θ_i)‖,   ε_i = ε₀·exp(−(ε₀‖∇loss(θ_i)‖)³)  (adaptive, eq. 2)
                                     ε_i = ε₀                          (fixed rate)

With u = ε₀ G (G the largest sampled gradient norm) the longest step is u (fixed rate) or
h(u) = u·exp(−u³) (adaptive); ε₀ = u_T / G where u_T is the smallest root of h(u) = T.
h peaks at u* = 3^(−1/3) with h(u*) = u*·e^(−1/3) ≈ 0.497: a target beyond that never
binds the adaptive step, and ε₀ = u*/G is returned (the largest gradient takes the longest
step the adaptive rate allows).

The choice is conservative by construction: ε₀ is set by the steepest sample, so where the
box reaches small masses (gradients ∝ 1/m³) descent near the valley is slow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from lagfit_cli.core.solvers import LossAndGrad

#: argmax and max of u·exp(−u³)
U_PEAK = 3.0 ** (-1.0 / 3.0)
H_PEAK = U_PEAK * math.exp(-1.0 / 3.0)


@dataclass
class AutoLR:
    lr: float  # the chosen ε₀
    max_grad_norm: float  # G, the largest sampled ‖∇loss‖
    target_step: float  # T
    n_samples: int  # gradients evaluated (finite ones)


def adaptive_root(target: float) -> float:
    """Smallest u ≥ 0 with u·exp(−u³) = target (u* when target ≥ the peak)."""
    if target >= H_PEAK:
        return U_PEAK
    low, high = 0.0, U_PEAK  # h is increasing on [0, u*]
    for _ in range(200):
        mid = 0.5 * (low + high)
        if mid * math.exp(-(mid**3)) < target:
            low = mid
        else:
            high = mid
    return low


def lr_for_max_step(max_grad_norm: float, target_step: float, adaptive: bool) -> float:
    """The largest ε₀ whose step at gradient norm ``max_grad_norm`` is at most ``target_step``."""
    u = adaptive_root(target_step) if adaptive else target_step
    return u / max_grad_norm


def auto_lr(loss_and_grad: LossAndGrad, theta_samples: Tensor, target_step: float, adaptive: bool) -> AutoLR:
    """Choose ε₀ from the gradients at theta_samples (S, P); non-finite samples are skipped.

    Raises ValueError if no sample has a finite, non-zero gradient.
    """
    _, grad = loss_and_grad(theta_samples)
    norms = grad.norm(dim=-1)
    finite = norms[norms.isfinite()]
    if finite.numel() == 0 or float(finite.max()) == 0.0:
        raise ValueError("no sampled guess has a finite, non-zero gradient")
    g_max = float(finite.max())
    return AutoLR(lr_for_max_step(g_max, target_step, adaptive), g_max, target_step, int(finite.numel()))
