"""Every figure lagfit writes, rendered and checked: no text (title, axis label, tick label,
legend, colour-bar label, annotation) reaches outside the figure, and every run folder's
figures/README.md names each figure with the table it is drawn from.

The check hooks ``io.style.save`` (the one way a figure is written), so every figure of
every run below is checked as it is saved: the seed report at tiny sizes, a custom fit with
unknown truths on a CSV file. The figures that only other tests' runs draw are
checked where they are drawn, the same way, so that no figure is drawn twice:
tests/test_simulate.py checks task=simulate's q(t) (fig_trajectories) and the rollout
check's figure (fig_rollout), tests/test_eiv.py the noise study's estimator figure,
tests/test_sweeps.py the summary.png of a sweep (`lagfit summarize` of its four-job sweep).
Both styles (paper, slides) are
covered. Rendering costs about 0.5 s of CPU per figure (matplotlib's text layout), so the
runs are few: the seed report on the anharmonic oscillator's m × α plane (3 parameters,
a mass term that vanishes inside the data, 2 × 2 convergence panels) stands for the
double pendulum's checks too.
"""

from pathlib import Path

from conftest import assert_inside, metrics
from lagfit_cli.io import style

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def assert_index(run_dir: Path, names: set) -> None:
    index = (run_dir / "figures" / "README.md").read_text(encoding="utf-8")
    for name in names:
        line = next((ln for ln in index.splitlines() if f"`{name}." in ln), None)
        assert line is not None and " — from " in line, (name, index)


def test_the_text_check_catches_a_clipped_label():
    """The check fails when it should: a y label pushed off the left edge is found."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 3), layout="constrained")
    ax.set_ylabel("a long label")
    ax.yaxis.set_label_coords(-3.0, 0.5)
    try:
        problems = style.text_outside(fig)
    finally:
        plt.close(fig)
    assert any("a long label" in p for p in problems), problems


#: the seed report on the anharmonic oscillator's m × α plane: a 3-parameter system (the
#: landscapes are 2-D slices) whose mass term m − 2αq² vanishes inside the data (masked)
SEED = ("experiment=seed_report", "system=anharmonic", "task.x=m", "task.y=alpha", "data.n=8", "init.n_starts=3", "optim.iters=40", "task.resolution=12",
        "task.sigmas=[0.01,0.1,1]", "task.realizations=2", "task.slice_points=11", "report.dpi=30")


def test_seed_report_figures_fit_their_canvas(lagfit, checked):
    proc = lagfit(*SEED, figures=True)
    assert proc.returncode == 0, proc.stderr
    for name in ("fit_results", "fit_history", "landscape", "landscape_paths", "noise_slice", "noise_rms"):
        assert (proc.run_dir / f"{name}.csv").is_file(), name
    report = metrics(proc.run_dir)
    assert report["task"] == "seed_report" and report["status"] == "ok"
    assert {"fit", "landscape", "noise_study"} <= set(report)
    assert report["fit"]["n_starts"] == 1 and report["landscape"]["paths"]["n_starts"] == 3
    names = {"fig1_qdd", "fig2_landscape", "fig3_fit_paths", "fit_convergence", "fig4_noise_slice",
             "fig5_noise_rms", "fig6_noise_landscapes", "noise_valley", "fig8_paths", "fig_correlations"}
    assert_inside(checked, {f"{n}.png" for n in names})
    assert_index(proc.run_dir, names)
    # the m × α plane crosses m = 2αq² inside the data: those cells are masked, not drawn
    assert "singular" not in proc.stderr
    # show_sigma (0.3) is not among the σ's: the figures show a sampled one, and say so
    m = metrics(proc.run_dir)["noise_study"]
    assert m["show_sigma"] in m["sigmas"]
    assert "task.show_sigma=0.3 is not among task.sigmas" in proc.stderr + proc.stdout
    # the threshold line stands at the interpolated crossing, below the first σ above it
    crossing, first = m["threshold_sigma_interpolated"], m["threshold_sigma"]
    assert crossing is None or crossing <= first


def test_custom_fit_on_measured_data_in_the_slides_style(lagfit, checked):
    """A custom fit on measured data with unknown truths (the file's column names as
    labels, no valley line through the best fit) in the larger slides style."""
    proc = lagfit("system=custom", 'system.lagrangian="0.5*m*l**2*qd**2 + m*g*l*cos(q)"',
                  "system.params={m: null, l: null, g: null}", "data=csv", f"data.path={EXAMPLES / 'pendulum.csv'}",
                  "data.columns={q0: theta, qd0: omega, qdd0: alpha}", "init.n_starts=2", "optim.iters=15",
                  "task.resolution=8", "report.dpi=30", "report.style=slides",
                  figures=True)
    assert proc.returncode == 0, proc.stderr
    names = {"fig1_qdd", "fig3_fit_paths", "fit_convergence", "fig_profiles"}
    assert_inside(checked, {f"{n}.png" for n in names})
    assert_index(proc.run_dir, names)
    assert "m: not identifiable" in proc.stderr + proc.stdout


def test_benchmark_figure_fits_its_canvas():
    """Fig. 7 (the solver benchmark) drawn from a benchmark table, legend outside the data."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from lagfit_cli.app.tasks.benchmark import fig7

    rows = [{"method": m, "n_points": n, "median_s": t * n, "min_s": 0.9 * t * n, "max_s": 1.2 * t * n}
            for m, t in (("loop", 1e-4), ("fast+compile", 1e-7), ("closed_form", 1e-8)) for n in (10, 1000)]
    fig = fig7(pd.DataFrame(rows), "q̈ solvers on harmonic (float64, cpu, 1 thread(s))")
    try:
        assert style.text_outside(fig) == []
    finally:
        plt.close(fig)

