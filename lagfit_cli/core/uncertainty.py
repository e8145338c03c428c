r"""Error bars on every reported value: the covariance of the fit, or the bootstrap.

``covariance`` (the default): at the best start, in the gauge-fixed coordinates the fit moves
(``free``), with r = q̈(θ) − q̈_data (M = N·D residuals) and J = ∂r/∂θ_free,

    Cov(θ_free) = s² (JᵀJ)⁻¹,        s² = RSS / (M − p),   p = rank of J

the ordinary-least-squares covariance, exact for a model linear in θ with Gaussian noise on
q̈ and asymptotically right otherwise. (JᵀJ)⁻¹ is taken through the SVD of J scaled by |θ|:
directions the data do not see (singular values below the identifiability threshold) get no
variance, and nothing that depends on them is reported with a finite error. Each reported
value f(θ) (a ratio θᵢ/θ_gauge, or θᵢ) gets, by the delta method,

    Var f = ∇fᵀ Cov ∇f,      95 % interval  f ± t₀.₉₇₅(M − p) · √Var f.

``bootstrap``: the rows (data points) are resampled ``n_boot`` times; each resample is a vector
of row counts w, so its least-squares problem is the original one with residuals scaled by
√w. All resamples are refitted from the best solution as one Levenberg–Marquardt batch
(:class:`WeightedResiduals`), and the intervals are the 2.5 / 97.5 % percentiles of their
reported values. This is the honest option when the noise is not Gaussian on q̈ (noise on the
q, q̇ inputs, outliers); note that noise on the inputs also biases the estimate, which no
interval around it repairs.

Gauge values (1 by definition) and not-identifiable values never get a finite error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from lagfit_cli.core.fit import IDENTIFIABLE, ratio_label, reported_values
from lagfit_cli.core.identify import RTOL, RTOL_FLOAT32
from lagfit_cli.core.random import generator
from lagfit_cli.core.systems import ParameterRatio, System

METHODS = ("covariance", "bootstrap", "none")
LEVEL = 0.95
#: two reported values correlated beyond this: the data barely separate them
CORRELATION_WARN = 0.99


@dataclass
class Uncertainty:
    """Per reported value (the rows of ``ratios``): std_error, ci_low, ci_high (NaN where
    none), and the correlations among the identifiable ones."""

    method: str
    labels: list[str]
    std_error: Tensor  # (R,) float64
    ci_low: Tensor
    ci_high: Tensor
    #: labels of the identifiable values and their correlation matrix (k, k)
    correlation_labels: list[str] = field(default_factory=list)
    correlation: Optional[Tensor] = None
    #: σ_max / σ_min of J (scaled by |θ|) over the free, visible directions
    condition_number: float = math.nan
    dof: Optional[int] = None
    residual_variance: float = math.nan
    n_boot: Optional[int] = None
    n_boot_used: Optional[int] = None
    warnings: list[str] = field(default_factory=list)

    def metrics(self, estimates: Tensor) -> dict[str, Any]:
        """The ``uncertainty`` section of metrics.json."""

        def number(x) -> Optional[float]:
            x = float(x)
            return x if math.isfinite(x) else None

        values = {
            label: {
                "value": number(estimates[r]),
                "std_error": number(self.std_error[r]),
                "ci_low": number(self.ci_low[r]),
                "ci_high": number(self.ci_high[r]),
            }
            for r, label in enumerate(self.labels)
        }
        out: dict[str, Any] = {
            "method": self.method,
            "level": LEVEL,
            "values": values,
            "correlations": {
                "labels": list(self.correlation_labels),
                "matrix": [[number(x) for x in row] for row in self.correlation.tolist()]
                if self.correlation is not None
                else [],
            },
            "condition_number": number(self.condition_number),
            "warnings": list(self.warnings),
        }
        if self.method == "covariance":
            out["dof"] = self.dof
            out["residual_variance"] = number(self.residual_variance)
            out["interval"] = "Student t (delta method)"
        elif self.method == "bootstrap":
            out["n_boot"] = self.n_boot
            out["n_boot_used"] = self.n_boot_used
            out["interval"] = "percentile"
        return out


def none_uncertainty(ratios: Sequence[ParameterRatio]) -> Uncertainty:
    nan = torch.full((len(ratios),), math.nan, dtype=torch.float64)
    return Uncertainty("none", [ratio_label(r) for r in ratios], nan, nan.clone(), nan.clone())


def _rtol(dtype: torch.dtype) -> float:
    return RTOL if dtype == torch.float64 else RTOL_FLOAT32


def free_covariance(
    residual: Tensor, jacobian: Tensor, theta: Tensor, free: Tensor
) -> tuple[Tensor, Tensor, int, float, float, Tensor, Tensor]:
    """s²(JᵀJ)⁺ over the free parameters, through the SVD of J scaled by |θ|.

    Args:
        residual: (M,), jacobian: (M, P), theta: (P,), free: (P,) bool.

    Returns:
        covariance (p, p) in the free coordinates, (JᵀJ)⁺ itself, dof M − rank, s², condition number, the
        null space of the scaled J (k, p), and the scale |θ_free|.
    """
    j_free = jacobian[:, free].to(torch.float64)
    theta_free = theta[free].to(torch.float64)
    scale = torch.where(theta_free.abs() > 0, theta_free.abs(), torch.ones_like(theta_free))
    scaled = (j_free * scale).nan_to_num(0.0)
    # V complete (p × p) without U's M × M
    _, singular, vh = torch.linalg.svd(scaled, full_matrices=scaled.shape[0] < scaled.shape[1])
    largest = float(singular[0]) if singular.numel() else 0.0
    rank = int((singular > _rtol(theta.dtype) * largest).sum()) if largest > 0 else 0
    m = residual.numel()
    dof = m - rank
    rss = float(residual.to(torch.float64).square().sum())
    s2 = rss / dof if dof > 0 else math.nan
    v = vh[:rank].T  # (p, rank)
    inverse = (v / singular[:rank].square()) @ v.T  # (JᵀJ)⁺ in scaled coordinates
    unit = scale[:, None] * inverse * scale[None, :]
    covariance = s2 * unit
    condition = float(singular[0] / singular[rank - 1]) if rank else math.inf
    return covariance, unit, dof, s2, condition, vh[rank:], scale


def value_gradients(system: System, ratios: Sequence[ParameterRatio], theta: Tensor) -> Tensor:
    """∂(reported values)/∂θ at theta (P,): (R, P); NaN rows for values with no error
    (gauges and not-identifiable ones)."""
    theta = theta.detach().to(torch.float64)
    index = {name: j for j, name in enumerate(system.param_names)}
    grad = torch.full((len(ratios), theta.numel()), math.nan, dtype=torch.float64, device=theta.device)
    for r, row in enumerate(ratios):
        i = index[row.name]
        if row.status == "absolute":
            grad[r] = 0.0
            grad[r, i] = 1.0
        elif row.status == "ratio":  # θᵢ/θ_g
            g = index[row.denominator]
            grad[r] = 0.0
            grad[r, i] += 1.0 / theta[g]
            grad[r, g] -= theta[i] / theta[g] ** 2
    return grad


def covariance_uncertainty(
    system: System,
    ratios: Sequence[ParameterRatio],
    theta: Tensor,
    residual: Tensor,
    jacobian: Tensor,
    free: Tensor,
) -> Uncertainty:
    """Delta-method standard errors and Student-t intervals (module docstring)."""
    from scipy.special import stdtrit  # the Student-t quantile (stats.t.ppf without its overhead)

    # a p × p problem: on the CPU in float64, whatever the fit ran on
    theta = theta.detach().cpu()
    residual, jacobian, free = residual.detach().cpu(), jacobian.detach().cpu(), free.cpu()
    cov, unit, dof, s2, condition, null, scale = free_covariance(residual, jacobian, theta, free)
    grad = value_gradients(system, ratios, theta)[:, free]
    estimates = reported_values(system, ratios, theta.to(torch.float64))
    # a value leaning on a direction J does not see gets no error bar (its gradient leaks
    # out of J's row space)
    var_values = torch.einsum("rp,pq,rq->r", grad, cov, grad)
    visible = _in_row_space(grad, null, scale)
    std = torch.where(visible & (var_values >= 0), var_values.clamp_min(0).sqrt(), torch.full_like(var_values, math.nan))
    quantile = float(stdtrit(dof, 0.5 + LEVEL / 2)) if dof > 0 else math.nan
    labels = [ratio_label(r) for r in ratios]
    out = Uncertainty(
        "covariance", labels, std, estimates - quantile * std, estimates + quantile * std,
        condition_number=condition, dof=dof, residual_variance=s2,
    )
    ident = [r for r, row in enumerate(ratios) if row.status in IDENTIFIABLE and bool(torch.isfinite(std[r]))]
    # correlations do not depend on s²: from (JᵀJ)⁺ itself, so exact data (s² = 0) have them too
    value_cov = grad.nan_to_num(0.0) @ unit @ grad.nan_to_num(0.0).T
    _set_correlations(out, labels, ident, value_cov)
    return out


def _in_row_space(grad: Tensor, null: Tensor, scale: Tensor, leak: float = 1e-6) -> Tensor:
    """(R,) whether each gradient (in the free coordinates) lies in J's row space, i.e.
    has no component along the null space ``null`` (k, p) of J scaled by ``scale``."""
    g = (grad * scale).nan_to_num(math.inf)
    finite = torch.isfinite(g).all(-1)
    g = torch.where(finite[:, None], g, torch.zeros_like(g))
    leaked = (g @ null.T).norm(dim=-1) > leak * g.norm(dim=-1)
    return finite & ~leaked


def _set_correlations(out: Uncertainty, labels: list[str], ident: list[int], value_cov: Tensor) -> None:
    if not ident:
        return
    sub = value_cov[ident][:, ident]
    d = sub.diagonal().sqrt()
    corr = sub / (d[:, None] * d[None, :])
    corr = torch.where(torch.isfinite(corr), corr, torch.zeros_like(corr))
    corr.fill_diagonal_(1.0)
    out.correlation_labels = [labels[r] for r in ident]
    out.correlation = corr.clamp(-1.0, 1.0)
    for a in range(len(ident)):
        for b in range(a + 1, len(ident)):
            rho = float(corr[a, b])
            if abs(rho) > CORRELATION_WARN:
                out.warnings.append(
                    f"{labels[ident[a]]} and {labels[ident[b]]} are correlated (ρ = {rho:+.4f}): "
                    "the data barely separate them; their individual errors are large, "
                    "a combination of them is fixed far better"
                )


# --------------------------------------------------------------------------- bootstrap


class WeightedResiduals:
    """The residuals of resample b, √wᵦ ⊙ r(θ): wᵦ (B, N) are row counts.

    Levenberg–Marquardt passes any subset of its starts, so each start carries its resample's
    index as one extra, never-free column of θ (the last): theta (B, P + 1).
    """

    kind = "weighted"

    def __init__(self, model, weights: Tensor, dof: int) -> None:
        self.model = model
        # (B, N) -> (B, N·D): a row's weight applies to each of its D residuals
        self.sqrt_w = weights.sqrt().repeat_interleave(dof, dim=1)
        self.n_residuals = model.n_residuals

    def _split(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        return theta[:, :-1], self.sqrt_w[theta[:, -1].round().long()]

    def residuals(self, theta: Tensor) -> Tensor:
        params, w = self._split(theta)
        return self.model.residuals(params) * w

    def residuals_and_jacobian(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        params, w = self._split(theta)
        residual, jacobian = self.model.residuals_and_jacobian(params)
        jacobian = jacobian * w[..., None]
        pad = torch.zeros_like(jacobian[..., :1])
        return residual * w, torch.cat([jacobian, pad], dim=-1)


def bootstrap_uncertainty(
    system: System,
    ratios: Sequence[ParameterRatio],
    model,
    theta: Tensor,
    free: Tensor,
    n_points: int,
    dof: int,
    n_boot: int,
    seed: int,
    iters: int = 100,
    **lm_options: Any,
) -> Uncertainty:
    """Row-resampling bootstrap, all resamples refitted as one LM batch from ``theta``."""
    from lagfit_cli.core.fit import DIVERGED
    from lagfit_cli.core.lm import levenberg_marquardt

    theta = theta.detach()
    gen = generator(seed, "bootstrap")
    rows = torch.randint(0, n_points, (n_boot, n_points), generator=gen)
    counts = torch.zeros((n_boot, n_points), dtype=torch.float64)
    counts.scatter_add_(1, rows, torch.ones_like(counts))
    counts = counts.to(dtype=theta.dtype, device=theta.device)
    weighted = WeightedResiduals(model, counts, dof)
    index = torch.arange(n_boot, dtype=theta.dtype, device=theta.device)[:, None]
    start = torch.cat([theta.expand(n_boot, -1), index], dim=1)
    free_aug = torch.cat([free.to(theta.device), torch.zeros(1, dtype=torch.bool, device=theta.device)])
    result = levenberg_marquardt(weighted, start, free_aug, iters=iters, **lm_options)
    ok = torch.tensor([s != DIVERGED for s in result.status])
    return bootstrap_summary(system, ratios, result.theta[:, :-1].to(torch.float64).cpu()[ok], n_boot)


def bootstrap_summary(system: System, ratios, fitted: Tensor, n_boot: int) -> Uncertainty:
    """Standard errors, percentile intervals and correlations of the reported values from
    the refitted resamples ``fitted`` (B', P) that did not fail (any estimator's bootstrap)."""
    values = reported_values(system, ratios, fitted)  # (B', R)
    labels = [ratio_label(r) for r in ratios]
    nan = torch.full((len(ratios),), math.nan, dtype=torch.float64)
    std, low, high = nan.clone(), nan.clone(), nan.clone()
    ident = [r for r, row in enumerate(ratios) if row.status in IDENTIFIABLE]
    if values.shape[0] >= 2 and ident:
        sub = values[:, ident]
        q = torch.quantile(sub, torch.tensor([0.5 - LEVEL / 2, 0.5 + LEVEL / 2], dtype=torch.float64), dim=0)
        std[ident], low[ident], high[ident] = sub.std(dim=0), q[0], q[1]
    out = Uncertainty("bootstrap", labels, std, low, high, n_boot=n_boot, n_boot_used=int(values.shape[0]))
    if values.shape[0] >= 2 and ident:
        centred = values[:, ident] - values[:, ident].mean(0)
        cov = centred.T @ centred / (values.shape[0] - 1)
        full = torch.zeros((len(ratios), len(ratios)), dtype=torch.float64)
        full[torch.tensor(ident)[:, None], torch.tensor(ident)[None, :]] = cov
        finite = [r for r in ident if bool(torch.isfinite(std[r])) and float(std[r]) > 0]
        _set_correlations(out, labels, finite, full)
    return out
