"""The report's studies: task=landscape, task=noise_study, optim.lr=auto, experiment=seed_report."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import metrics
from lagfit_cli.core.slices import perpendicular_slice, valley_shape
from lagfit_cli.core.step_size import H_PEAK, U_PEAK, adaptive_root, lr_for_max_step

SMALL = ("data.n=10", "report.dpi=40")


def test_landscape_valley_and_closed_form(lagfit):
    proc = lagfit("task=landscape", *SMALL, "task.resolution=41", "task.x_range=[0.5,3.5]",
                  "task.y_range=[0.3,7.7]", "init.n_starts=4", "optim.iters=300")
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(proc.run_dir / "landscape.csv")
    assert list(table.columns) == ["m", "k", "loss"] and len(table) == 41 * 41
    # harmonic: q̈ = −(k/m) q, so loss = (k/m − 2)² · mean(q²) over the 10 × 10 data grid
    mean_q2 = float(np.mean(np.linspace(-1, 1, 10) ** 2))
    expected = (table.k / table.m - 2) ** 2 * mean_q2
    assert np.allclose(table.loss, expected, rtol=1e-10, atol=1e-14)
    # in every column m = const the minimum over k lies on the valley k = 2m to grid resolution
    dk = (7.7 - 0.3) / 40
    for m, column in table.groupby("m"):
        k_best = column.k.iloc[int(np.argmin(column.loss.to_numpy()))]
        assert abs(k_best - 2 * m) <= dk / 2 + 1e-12, (m, k_best)
    m_ = metrics(proc.run_dir)
    assert m_["task"] == "landscape" and m_["valley_slope"] == 2.0
    best = m_["grid_min_at"]
    assert abs(best["k"] - 2 * best["m"]) <= dk / 2 + 1e-12
    # init.n_starts > 1: the descent paths over the landscape (Fig. 8's table; the figures are
    # drawn in test_seed_report_writes_every_figure)
    paths = pd.read_csv(proc.run_dir / "landscape_paths.csv")
    assert set(paths.start) == set(range(4)) and m_["paths"]["n_starts"] == 4


def test_landscape_axes_by_name_and_bad_name(lagfit):
    proc = lagfit("task=landscape", "system=anharmonic", "task.x=m", "task.y=alpha",
                  "task.resolution=6", "init.n_starts=1", "data.n=6", "report.figures=false")
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(proc.run_dir / "landscape.csv")
    assert list(table.columns) == ["m", "k", "alpha", "loss"]
    assert np.allclose(table.k / table.m, 2.0)  # k follows the gauge m at its true ratio
    bad = lagfit("task=landscape", "task.x=z")
    assert bad.returncode == 2 and "lagfit: error: task.x: 'z' is not a parameter" in bad.stderr


def test_noise_study_rms_grows_with_sigma(lagfit):
    proc = lagfit("task=noise_study", *SMALL, "task.sigmas=[0.01,0.1,1.0,0.03]",
                  "task.realizations=3", "task.slice_points=21", "task.resolution=12",
                  "task.show_sigma=0.1")
    assert proc.returncode == 0, proc.stderr
    rms = pd.read_csv(proc.run_dir / "noise_rms.csv")
    assert rms.sigma.tolist() == [0.01, 0.03, 0.1, 1.0]
    assert (np.diff(rms.rms_mean) > 0).all()
    assert (rms.rms_min <= rms.rms_mean).all() and (rms.rms_mean <= rms.rms_max).all()
    # the valley flattens: its dynamic range on the slice shrinks and its floor rises
    assert (np.diff(rms.valley_decades) < 0).all() and (np.diff(rms.valley_floor) > 0).all()

    slices = pd.read_csv(proc.run_dir / "noise_slice.csv")
    assert len(slices) == 4 * 3 * 21
    clean = slices[(slices.sigma == 0.01) & (slices.realization == 0)]
    at_truth = clean.iloc[10]
    assert abs(at_truth.s) < 1e-12 and abs(at_truth.m - 2) < 1e-12 and abs(at_truth.k - 4) < 1e-12
    assert at_truth.clean_loss < 1e-25
    # the slice is perpendicular to the valley direction (m, k) ∝ (2, 4)
    assert np.allclose((clean.m - 2) * 2 + (clean.k - 4) * 4, 0, atol=1e-12)
    # each row's RMS, recomputed from the slice table
    one = slices[slices.sigma == 0.1]
    per_real = one.groupby("realization").apply(lambda g: math.sqrt(((g.loss - g.clean_loss) ** 2).mean()),
                                                include_groups=False)
    assert math.isclose(per_real.mean(), rms.rms_mean[2], rel_tol=1e-12)

    m = metrics(proc.run_dir)
    limit = m["threshold_fraction"] * m["clean_loss_range"]
    first_over = rms.sigma[rms.rms_mean > limit]
    assert m["threshold_sigma"] == (first_over.iloc[0] if len(first_over) else None)


def test_noise_study_targets_scale_as_sigma_squared(lagfit):
    # noise on q̈ alone: noisy − clean loss = 2σ·mean(e z) + σ²·mean(z²) on every slice point,
    # so at large σ the RMS error grows as σ²
    proc = lagfit("task=noise_study", *SMALL, "noise.apply_to=targets", "task.sigmas=[10,100]",
                  "task.realizations=2", "task.slice_points=11", "report.figures=false")
    assert proc.returncode == 0, proc.stderr
    rms = pd.read_csv(proc.run_dir / "noise_rms.csv")
    assert 90 < rms.rms_mean[1] / rms.rms_mean[0] < 110


SMALL_M = ("optim=gd", "init=box", "check.require_converged=false", "system.params.m=1", "system.params.k=2", "init.box_width=0.5", "init.n_starts=8", "data.n=8",
           "report.figures=false")


def test_auto_lr_converges_where_a_fixed_large_rate_runs_away(lagfit):
    fixed = lagfit(*SMALL_M, "optim.adaptive=false", "optim.lr=5", "optim.iters=200")
    assert fixed.returncode == 0, fixed.stderr
    results = pd.read_csv(fixed.run_dir / "fit_results.csv")
    assert (results.status != "converged").any()
    assert results.m.abs().max() > 50  # thrown far out of the box m ∈ [0.5, 1.5], across m = 0

    auto = lagfit(*SMALL_M, "optim.lr=auto", "optim.auto_step_fraction=0.25", "optim.iters=2000")
    assert auto.returncode == 0, auto.stderr
    m = metrics(auto.run_dir)
    assert m["n_converged"] == m["n_starts"] == 8
    assert m["ratios"]["k/m"]["rel_error"] < 1e-9
    assert m["lr_mode"] == "auto" and math.isclose(m["auto_target_step"], 0.25 * 2 * 0.5)
    assert 0 < m["optim_lr"] < 0.1
    history = pd.read_csv(auto.run_dir / "fit_history.csv")
    first = history[history.iter == 0]
    assert (first.lr * first.grad_norm <= m["auto_target_step"] * (1 + 1e-9)).all()
    assert (history.m > 0).all()  # never crossed the singular m = 0
    assert "optim.lr=auto: ε₀ =" in auto.stderr


def test_auto_lr_fixed_rate_is_target_over_largest_gradient(lagfit):
    proc = lagfit(*SMALL_M, "optim.lr=auto", "optim.adaptive=false", "optim.iters=5")
    assert proc.returncode == 0, proc.stderr
    m = metrics(proc.run_dir)
    assert math.isclose(m["optim_lr"] * m["auto_max_grad_norm"], m["auto_target_step"], rel_tol=1e-12)


def test_adaptive_root_and_step_bound():
    for target in (1e-3, 0.1, 0.3, 0.49):
        u = adaptive_root(target)
        assert 0 < u <= U_PEAK and math.isclose(u * math.exp(-(u**3)), target, rel_tol=1e-10)
    assert adaptive_root(0.6) == U_PEAK and H_PEAK < 0.5
    assert math.isclose(lr_for_max_step(20.0, 0.1, adaptive=False), 0.005)


def test_slice_and_valley_shape():
    truth = torch.tensor([2.0, 4.0])
    line = perpendicular_slice(truth, 0, 1, [], 0.25, 11)
    assert torch.allclose(line.theta[5], truth)
    direction = line.theta[-1] - line.theta[0]
    assert abs(float(direction @ truth)) < 1e-12
    assert math.isclose(float(line.s[-1]), 0.25 * math.hypot(2, 4))
    s = np.linspace(-1, 1, 2001)
    clean = valley_shape(s, s**2)
    assert clean.width == 0 and clean.floor == 0 and math.isnan(clean.decades)
    c = 0.01
    noisy = valley_shape(s, s**2 + c)  # below √(c(1+c)) where s² ≤ √(c(1+c)) − c
    assert math.isclose(noisy.width, 2 * math.sqrt(math.sqrt(c * (1 + c)) - c), rel_tol=1e-4)
    assert math.isclose(noisy.decades, math.log10((1 + c) / c))


#: bad study keys: (the task group chosen, the bad values, the key its one-line error names)
BAD_STUDY_KEYS = [
    (None, {"optim.lr": "fast"}, "optim.lr"),
    (None, {"optim.lr": "auto", "init.box_width": 0}, "optim.lr"),
    (None, {"optim.lr": "auto", "optim.auto_step_fraction": 0}, "optim.auto_step_fraction"),
    ("noise_study", {"task.sigmas": [0.1, -1]}, "task.sigmas"),
    ("noise_study", {"task.realizations": 0}, "task.realizations"),
    ("landscape", {"task.resolution": 1}, "task.resolution"),
    ("landscape", {"task.x_range": [2, 1]}, "task.x_range"),
    ("landscape", {"task.x": "k", "task.y": "k"}, "task.y"),
]


@pytest.fixture(scope="module")
def composed_tasks():
    """The composed config of the default task, task=noise_study and task=landscape (one
    Hydra composition each, shared by the cases below)."""
    from conftest import compose

    return {task: compose(*([f"task={task}"] if task else [])) for task in (None, "noise_study", "landscape")}


@pytest.mark.parametrize("task, values, expected", BAD_STUDY_KEYS,
                         ids=[" ".join(f"{k}={v}" for k, v in case[1].items()) for case in BAD_STUDY_KEYS])
def test_study_keys_fail_with_their_key(composed_tasks, task, values, expected):
    """The check every job runs first (validate_static) names the bad key; the two command
    lines below show that such an error is one line, exit code 2, and no results."""
    from omegaconf import OmegaConf

    from lagfit_cli.app.config import ConfigError, validate_static

    cfg = composed_tasks[task].copy()
    validate_static(cfg)  # the composed config itself is good
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, merge=False)
    with pytest.raises(ConfigError) as error:
        validate_static(cfg)
    assert expected in str(error.value).splitlines()[0] and len(str(error.value).splitlines()) == 1


@pytest.mark.parametrize("override, expected", [
    ("optim.lr=fast", "optim.lr"),
    ("task=landscape task.x=k task.y=k", "task.y"),
])
def test_study_keys_fail_with_one_line(lagfit, override, expected):
    proc = lagfit(*override.split())
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lagfit: error:")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (proc.run_dir / "metrics.json").exists()


def test_a_ratio_check_on_a_task_without_fitted_ratios_fails_cleanly(lagfit):
    proc = lagfit("task=landscape", "data.n=4", "task.resolution=4", "init.n_starts=1",
                  "report.figures=false", "check.max_ratio_rel_error=1e-6")
    assert proc.returncode == 3, proc.stderr
    assert "reports no fitted ratios" in proc.stderr and "Traceback" not in proc.stderr
