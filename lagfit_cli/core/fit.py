r"""Fitting θ by gradient descent on the mean squared q̈ error, all starts as one batch.

Loss (seed report, eq. 1), per start b:

    loss_b = 1/(N·D) Σ_i ‖q̈(q_i, q̇_i; θ_b) − q̈_i‖²

Step, with the report's adaptive rate (eq. 2):

    ε_b = ε₀ · exp(−(ε₀ ‖∇_θ loss_b‖)³),    θ_b ← θ_b − ε_b ∇_θ loss_b

L and cL give the same motion, so θ is identifiable only up to scale: results are reported
per parameter as ``System.parameter_ratios`` says (a ratio θⱼ / θ_gauge within its scale
group, the gauge itself, an absolute value, or not identifiable) beside the raw values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from lagfit_cli.core.solvers import LossAndGrad, Solver
from lagfit_cli.errors import ArgumentError, LagfitError
from lagfit_cli.core.systems import ParameterRatio, System



def mse_loss(qdd_pred: Tensor, qdd_true: Tensor) -> Tensor:
    """Eq. 1 per start: qdd_pred (B, N, D), qdd_true (N, D) -> (B,)."""
    return (qdd_pred - qdd_true).pow(2).mean(dim=(-2, -1))


def loss_on_batch(
    system: System,
    solver: Solver,
    q: Tensor,
    qd: Tensor,
    qdd_true: Tensor,
    theta: Tensor,
    max_evaluations: int = 2_000_000,
) -> Tensor:
    """Loss for many parameter vectors theta (B, P) -> (B,), in chunks of bounded size."""
    chunk = max(1, max_evaluations // max(1, q.shape[0]))
    with torch.no_grad():
        return torch.cat(
            [mse_loss(solver(system, q, qd, part), qdd_true) for part in theta.split(chunk)]
        )


# --------------------------------------------------------------------------- descent

CONVERGED, STALLED, MAX_ITERS, DIVERGED = "converged", "stalled", "max_iters", "diverged"
#: every start ends in one of these (see ``lm`` for when a start has converged or stalled)
STATUSES = (CONVERGED, STALLED, MAX_ITERS, DIVERGED)


@dataclass
class FitHistory:
    """Per-iteration records; row r is the state before step ``iters[r]``.

    theta (T, B, P), loss (T, B), grad_norm (T, B), lr (T, B) (NaN where no step was
    taken); a start's rows after ``stop_iter[b]`` repeat its frozen state. Unthinned
    (the default), ``iters[r] == r``; thinned, the rows are every k-th iteration plus the
    last one, so the row of a start's stop may be a later row holding the same frozen state.
    """

    theta: Tensor
    loss: Tensor
    grad_norm: Tensor
    lr: Tensor
    #: (T,) the iteration of each row (None: row r is iteration r)
    iters: Optional[Tensor] = None

    def iteration(self) -> Tensor:
        """(T,) the iteration of each row."""
        if self.iters is not None:
            return self.iters
        return torch.arange(self.loss.shape[0], device=self.loss.device)

    def rows_until(self, stop: int) -> int:
        """How many rows reach a start that stopped at iteration ``stop`` (its frozen state
        is the first row at or after ``stop``)."""
        at_or_after = torch.nonzero(self.iteration() >= stop).flatten()
        return int(at_or_after[0]) + 1 if at_or_after.numel() else self.loss.shape[0]


@dataclass
class FitResult:
    theta_init: Tensor  # (B, P)
    theta: Tensor  # (B, P), where each start stopped
    loss: Tensor  # (B,)
    grad_norm: Tensor  # (B,)
    status: list[str]  # per start: converged | max_iters | diverged
    stop_iter: Tensor  # (B,) the last recorded iteration of each start
    history: FitHistory
    #: the ε₀ the descent ran with, and how it was chosen (e.g. optim.lr=auto's numbers)
    lr0: float = float("nan")
    lr_info: dict = field(default_factory=dict)
    #: the optimiser: "gd" (the report's gradient descent) or "lm" (Levenberg–Marquardt);
    #: history.lr holds gd's rate ε or lm's damping λ
    method: str = "gd"

    @property
    def best(self) -> int:
        """Index of the start with the lowest final loss (diverged starts excluded)."""
        ok = torch.tensor([s != DIVERGED for s in self.status], device=self.loss.device)
        if not bool(ok.any()):
            raise LagfitError("fit: every start diverged; lower optim.lr or narrow init.box_width")
        masked = torch.where(ok, self.loss, torch.full_like(self.loss, float("inf")))
        return int(torch.argmin(masked))


def gradient_descent(
    loss_and_grad: LossAndGrad,
    theta_init: Tensor,
    lr: float,
    iters: int,
    adaptive: bool = True,
    grad_tol: float = 0.0,
    loss_tol: float = 0.0,
    on_iteration: Optional[Callable[[int, Tensor], None]] = None,
    history_every: int = 1,
    history_max_rows: Optional[int] = None,
) -> FitResult:
    """Run all B starts together until each converges, diverges, or ``iters`` steps pass.

    A start is *diverged* once its loss, gradient or parameters are not finite; it is
    then frozen (at its last finite parameters) while the others carry on.
    ``on_iteration(t, loss)`` is called after each evaluation (for a progress bar).

    The history keeps every ``history_every``-th iteration and the last one; with
    ``history_max_rows``, once that many rows are kept every other one is dropped and the
    stride doubles, so its memory is bounded whatever ``iters`` is.
    """
    if history_every < 1:
        raise ArgumentError("history_every", f"must be at least 1, got {history_every}")
    if history_max_rows is not None and history_max_rows < 2:
        raise ArgumentError("history_max_rows", f"must be at least 2 (or None), got {history_max_rows}")
    stride = history_every
    rows_iter: list[int] = []
    theta = theta_init.clone()
    n_starts = theta.shape[0]
    device = theta.device
    active = torch.ones(n_starts, dtype=torch.bool, device=device)
    status = [MAX_ITERS] * n_starts
    stop_iter = torch.full((n_starts,), iters, dtype=torch.long, device=device)
    last_loss = torch.full((n_starts,), float("nan"), dtype=theta.dtype, device=device)
    last_grad_norm = last_loss.clone()
    rows_theta, rows_loss, rows_grad_norm, rows_lr = [], [], [], []

    for t in range(iters + 1):
        loss, grad = loss_and_grad(theta)
        grad_norm = grad.norm(dim=-1)
        finite = torch.isfinite(loss) & torch.isfinite(grad).all(-1) & torch.isfinite(theta).all(-1)
        diverged = active & ~finite
        converged = active & finite & ((grad_norm <= grad_tol) | (loss <= loss_tol))
        stopping = diverged | converged
        last_loss = torch.where(active, loss, last_loss)
        last_grad_norm = torch.where(active, grad_norm, last_grad_norm)

        if adaptive:
            step_lr = lr * torch.exp(-((lr * grad_norm) ** 3))
        else:
            step_lr = torch.full_like(grad_norm, lr)
        moving = active & ~stopping
        if t == iters:
            moving = torch.zeros_like(active)
        step_lr = torch.where(moving, step_lr, torch.full_like(step_lr, float("nan")))

        if on_iteration is not None:
            on_iteration(t, last_loss)

        if bool(stopping.any()):
            for b in torch.nonzero(stopping).flatten().tolist():
                status[b] = DIVERGED if bool(diverged[b]) else CONVERGED
                stop_iter[b] = t
            active = active & ~stopping
        last = t == iters or not bool(active.any())
        if t % stride == 0 or last:
            rows_theta.append(theta.clone())
            rows_loss.append(last_loss.clone())
            rows_grad_norm.append(last_grad_norm.clone())
            rows_lr.append(step_lr)
            rows_iter.append(t)
            if history_max_rows is not None and len(rows_iter) >= history_max_rows and not last:
                # thin: keep the rows on the doubled stride (row 0 always stays)
                stride *= 2
                keep = [i for i, it in enumerate(rows_iter) if it % stride == 0]
                rows_theta, rows_loss, rows_grad_norm, rows_lr, rows_iter = (
                    [rows[i] for i in keep]
                    for rows in (rows_theta, rows_loss, rows_grad_norm, rows_lr, rows_iter)
                )
        if last:
            break
        new_theta = theta - step_lr.nan_to_num(0.0)[:, None] * grad.nan_to_num(0.0)
        theta = torch.where(moving[:, None], new_theta, theta)

    history = FitHistory(
        theta=torch.stack(rows_theta),
        loss=torch.stack(rows_loss),
        grad_norm=torch.stack(rows_grad_norm),
        lr=torch.stack(rows_lr),
        iters=None if rows_iter == list(range(len(rows_iter))) else torch.tensor(rows_iter, device=device),
    )
    return FitResult(
        theta_init=theta_init,
        theta=theta,
        loss=last_loss,
        grad_norm=last_grad_norm,
        status=status,
        stop_iter=stop_iter,
        history=history,
        lr0=float(lr),
    )


# --------------------------------------------------------------------------- ratios


#: statuses whose reported value q̈ determines (see ``System.parameter_ratios``)
IDENTIFIABLE = ("ratio", "absolute")


def ratio_label(row: ParameterRatio) -> str:
    """How a parameter's reported value is named: ``g/l`` for a ratio, its name otherwise."""
    return f"{row.name}/{row.denominator}" if row.status == "ratio" else row.name


def reported_values(system: System, rows: Sequence[ParameterRatio], theta: Tensor) -> Tensor:
    """Each parameter as reported: (..., P) -> (..., P), one column per parameter.

    ``ratio``: θⱼ / θ_gauge of its scale group; ``gauge``: 1 (by definition);
    ``absolute``: θⱼ itself; ``unidentifiable``: NaN (q̈ does not determine it).
    NaN entries of theta (unknown true values) give NaN where they are used.
    """
    index = {name: j for j, name in enumerate(system.param_names)}
    columns = []
    for row in rows:
        value = theta[..., index[row.name]]
        if row.status == "ratio":
            value = value / theta[..., index[row.denominator]]
        elif row.status == "gauge":
            value = torch.ones_like(value)
        elif row.status == "unidentifiable":
            value = torch.full_like(value, float("nan"))
        columns.append(value)
    return torch.stack(columns, dim=-1)


def relative_error(estimate: Tensor, truth: Tensor) -> Tensor:
    """|estimate − truth| / |truth|, or the absolute error where the truth is 0."""
    scale = torch.where(truth == 0, torch.ones_like(truth), truth.abs())
    return (estimate - truth).abs() / scale
