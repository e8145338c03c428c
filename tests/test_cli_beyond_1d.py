"""Issue 5 through the CLI: multi-DOF systems, custom Lagrangians, data=uniform, the user's
own CSV (known and unknown truths), bad input, singular mass matrices, hostile expressions.

Bad input: one whole run per kind of refusal shows the command's answer (exit 2, one line,
no results); the other bad values go through the same checks without starting a run
(test_cli.job_line: the job's checks and the task's set-up, as a run makes them)."""

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import metrics, run_task
from lagfit_cli.core.systems import DUFFING, COUPLED_OSCILLATORS
from test_cli import job_line


def one_error_line(proc) -> str:
    """The run failed on bad input: exit 2, exactly one error line, no traceback or results."""
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lagfit: error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (proc.run_dir / "metrics.json").exists()
    return errors[0]


# --------------------------------------------------------------------------- new systems

EXPECTED = {
    # system: (identifiable ratios, gauges, unidentifiable)
    "duffing": ({"k/m", "beta/m"}, ["m"], []),
    "pendulum": ({"g/l"}, ["l"], ["m"]),
    "double_pendulum": ({"m2/m1", "l2/l1", "g/l1"}, ["m1", "l1"], []),
    "coupled_oscillators": ({"m2/m1", "k1/m1", "k2/m1", "kc/m1"}, ["m1"], []),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_new_system_fits_from_the_plain_command(lagfit, name):
    # the plain command (σ = 0, the system's own data/init/optim defaults); figures are
    # drawn for the D = 2 double pendulum (on a coarse landscape, as PDF) to check they work
    extra = ["task.resolution=4", "report.dpi=20", "report.format=pdf"] if name == "double_pendulum" else ["report.figures=false"]
    proc = lagfit(f"system={name}", *extra, figures=name == "double_pendulum")
    assert proc.returncode == 0, proc.stderr
    m = metrics(proc.run_dir)
    ratios, gauges, hidden = EXPECTED[name]
    assert set(m["ratios"]) == ratios
    assert m["gauges"] == gauges and m["unidentifiable"] == hidden
    assert m["truth_known"] is True
    assert m["max_ratio_rel_error"] < 1e-4, m["ratios"]
    assert all(r["rel_error"] < 1e-4 and r["status"] == "ratio" for r in m["ratios"].values())
    for line in [f"{g}: gauge" for g in gauges] + [f"{h}: not identifiable" for h in hidden]:
        assert line in proc.stderr
    if name == "pendulum":
        results = pd.read_csv(proc.run_dir / "fit_results.csv")
        assert {"g/l", "g/l_rel_error"} <= set(results)
        assert not any(column.startswith("m/") for column in results)  # no made-up m/l
    if name == "double_pendulum":
        assert m["data"] == "uniform" and m["n_points"] == 200  # not a 50⁴ grid
        for figure in ("fig1_qdd", "fig3_fit_paths", "fit_convergence"):
            assert (proc.run_dir / "figures" / f"{figure}.pdf").read_bytes().startswith(b"%PDF")


def test_a_d2_grid_draws_q_dd_over_q0_q1():
    # the task's own figure, drawn here (the double pendulum above writes a D = 2 run's files)
    report = run_task("system=coupled_oscillators", "data=grid", "data.n=4", "optim.iters=5",
                      "task.resolution=6", "uncertainty=none")
    assert report.metrics["n_points"] == 4**4
    fig = report.figures["fig1_qdd"]
    assert "2-D slice of the state grid" in fig._suptitle.get_text()  # noqa: SLF001
    panels = [ax for ax in fig.axes if ax.get_xlabel()]
    assert len(panels) == 2 and all((ax.get_xlabel(), ax.get_ylabel()) == ("$q_0$", "$q_1$") for ax in panels)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=40)
    assert png.getvalue().startswith(b"\x89PNG")


def test_fit_paths_pair_picks_any_pair_and_rejects_a_bad_one():
    report = run_task("system=pendulum", "task.x=m", "task.y=l", "optim.iters=20", "task.resolution=8", "uncertainty=none")
    ax = report.figures["fig3_fit_paths"].axes[0]
    assert "m" in ax.get_xlabel() and "l" in ax.get_ylabel() and "g" not in ax.get_xlabel() + ax.get_ylabel()
    assert "task.y: must differ from task.x" in job_line("system=pendulum", "task.x=m", "task.y=m")
    assert "task.x: 'z' is not a parameter of 'pendulum'" in job_line("system=pendulum", "task.x=z")


# --------------------------------------------------------------------------- custom, uniform


def test_custom_lagrangian_with_its_own_parameter_names(lagfit):
    proc = lagfit(
        "system=custom",
        'system.lagrangian="0.5*M*qd0**2 - 0.5*K*q0**2 - B*q0**4"',
        "system.params={M: 1.0, K: 2.0, B: 0.25}",
        "data=uniform", "data.n_points=300", "data.q_bounds=[-1.5,1.5]",
        "optim.lr=0.05", "optim.iters=2000", "report.figures=false",
    )
    assert proc.returncode == 0, proc.stderr
    m = metrics(proc.run_dir)
    assert m["params"] == ["M", "K", "B"] and m["n_points"] == 300
    assert m["ratios"]["K/M"]["rel_error"] < 1e-4 and m["ratios"]["B/M"]["rel_error"] < 1e-4


def test_uniform_data_is_seeded(lagfit):
    runs = [lagfit("data=uniform", "data.n_points=50", "optim.iters=3", "report.figures=false", f"seed={s}")
            for s in (0, 0, 1)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    tables = [(r.run_dir / "fit_history.csv").read_bytes() for r in runs]
    assert tables[0] == tables[1] != tables[2]


def test_a_coordinate_without_kinetic_term_is_reported():
    error = job_line(
        "system=custom", 'system.lagrangian="0.5*m*qd0**2 - 0.5*k*q0**2 - 0.5*k*q1**2"',
        "system.params={m: 1.0, k: 2.0}", "data=uniform", "data.n_points=40",
    )
    assert "mass matrix" in error and "singular" in error and "at 40 of 40 data points" in error
    assert "e.g. q=(" in error and "kinetic term" in error


# --------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("__import__('os').system('touch PWNED')", "not allowed"),
        ("q0.__class__", "attribute access '.__class__'"),
        ("open('PWNED', 'w')", "open"),
        ("(lambda: 0)()", "lambda"),
        ("q0[0]", "subscript"),
        ("+".join(["m*qd0**2"] * 12000), "limit"),  # 107,999 characters
        ("(" * 500 + "qd0" + ")" * 500, "nested"),
    ],
)
def test_hostile_expressions_are_refused_without_running(tmp_path, monkeypatch, expression, expected):
    monkeypatch.chdir(tmp_path)  # where a PWNED file would appear
    error = job_line("system=custom", f'system.lagrangian="{expression}"', "system.params={m: 1.0}")
    assert error.startswith("lagfit: error: system.lagrangian:") and expected in error, error
    assert not (tmp_path / "PWNED").exists()


def test_a_hostile_expression_run_is_one_line_and_runs_nothing(lagfit):
    expression = "__import__('os').system('touch PWNED')"
    proc = lagfit("system=custom", f'system.lagrangian="{expression}"', "system.params={m: 1.0}")
    error = one_error_line(proc)
    assert error.startswith("lagfit: error: system.lagrangian:") and "not allowed" in error, error
    assert not (lagfit.tmp_path / "PWNED").exists()


# --------------------------------------------------------------------------- the user's CSV


def write_duffing_csv(path, n=300, seed=0, **columns):
    """Measurements of the Duffing oscillator at m = 1, k = 2, β = 0.5, with a time column."""
    gen = torch.Generator().manual_seed(seed)
    q = 3 * torch.rand((n, 1), generator=gen) - 1.5
    qd = 2 * torch.rand((n, 1), generator=gen) - 1
    qdd = DUFFING.closed_form(q, qd, torch.tensor([1.0, 2.0, 0.5]))
    table = pd.DataFrame({"t": np.arange(n) * 0.01, "q0": q[:, 0], "qd0": qd[:, 0], "qdd0": qdd[:, 0]})
    table = table.rename(columns={v: k for k, v in columns.items()})
    table.to_csv(path, index=False)
    return table


def test_csv_with_known_truths_fits_like_synthetic_data(lagfit):
    path = lagfit.tmp_path / "duffing.csv"
    write_duffing_csv(path, position="q0")  # a column named 'position', mapped below
    # measured data: only values given on the command line are truths (not the YAML's)
    proc = lagfit("system=duffing", "data=csv", f"data.path={path}", "data.columns={q0: position}",
                  "system.params={m: 1.0, k: 2.0, beta: 0.5}")
    assert proc.returncode == 0, proc.stderr
    m = metrics(proc.run_dir)
    assert m["data"] == "csv" and m["n_points"] == 300 and m["truth_known"] is True
    assert m["max_ratio_rel_error"] < 1e-4
    # the figures of a fit on a CSV file (fitted vs data scatter, the paths about the best
    # fit where the truth is unknown) are drawn and checked in tests/test_figures.py


def test_csv_with_unknown_truths_reports_no_errors_against_made_up_values(lagfit):
    path = lagfit.tmp_path / "measured.csv"
    write_duffing_csv(path)
    proc = lagfit(
        "system=duffing", "data=csv", f"data.path={path}",
        "system.params={m: null, k: null, beta: null}", "init=box", "init.center=1.0", "init.box_width=0.5",
    )
    assert proc.returncode == 0, proc.stderr
    m = metrics(proc.run_dir)
    assert m["truth_known"] is False and m["max_ratio_rel_error"] is None
    assert m["true_params"] == {"m": None, "k": None, "beta": None}
    for name, truth in (("k/m", 2.0), ("beta/m", 0.5)):
        assert m["ratios"][name]["true"] is None and m["ratios"][name]["rel_error"] is None
        assert math.isclose(m["ratios"][name]["estimate"], truth, rel_tol=1e-4)
    results = pd.read_csv(proc.run_dir / "fit_results.csv")
    assert "k/m" in results and not any(c.endswith("_rel_error") for c in results)
    # starts are centred at init.center where the truth is unknown
    random = results[results["kind"] == "random"]
    assert random[["m_init", "k_init", "beta_init"]].stack().between(0.5, 1.5).all()
    assert "k/m = " in proc.stderr and "true value unknown" in proc.stderr


def test_csv_from_a_two_coordinate_system(lagfit):
    gen = torch.Generator().manual_seed(1)
    q, qd = 2 * torch.rand((60, 2), generator=gen) - 1, 2 * torch.rand((60, 2), generator=gen) - 1
    qdd = COUPLED_OSCILLATORS.closed_form(q, qd, torch.tensor([1.0, 1.5, 2.0, 1.0, 1.0]))
    path = lagfit.tmp_path / "two.csv"
    columns = {f"{kind}{i}": values[:, i] for kind, values in (("q", q), ("qd", qd), ("qdd", qdd)) for i in range(2)}
    pd.DataFrame(columns).to_csv(path, index=False)
    proc = lagfit("system=coupled_oscillators", "data=csv", f"data.path={path}", "optim.iters=20",
                  "task.resolution=6", "report.dpi=40")
    assert proc.returncode == 0, proc.stderr
    assert metrics(proc.run_dir)["n_points"] == 60
    # the same file against a one-coordinate system
    error = job_line("system=duffing", "data=csv", f"data.path={path}")
    assert str(path) in error and "2 coordinates" in error and "the system has 1" in error


def _csv(tmp_path, text: str):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


GOOD_ROWS = "".join(f"{0.1 * i},{0.2},{-0.3}\n" for i in range(5))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("q0,qd0\n" + "0.1,0.2\n" * 5, ["missing column 'qdd0'"]),
        ("q0,qd0,qdd0\n" + GOOD_ROWS + "0.1,abc,0.3\n", ["column 'qd0'", "row 6 (file line 7)", "'abc'"]),
        ("q0,qd0,qdd0\n" + GOOD_ROWS + "0.1,,0.3\n", ["column 'qd0'", "row 6", "empty cell"]),
        ("q0,qd0,qdd0\n0.1,0.2,nan\n" + GOOD_ROWS, ["column 'qdd0'", "row 1 (file line 2)", "not finite"]),
        ("q0,qd0,qdd0\n" + GOOD_ROWS + "inf,0.2,0.3\n", ["column 'q0'", "row 6", "'inf' is not finite"]),
        ("q0,qd0,qdd0\n0.1,0.2,0.3\n", ["has 1 data rows", "at least 3"]),
        ("", ["not a readable CSV file"]),
    ],
)
def test_bad_csv_is_one_line_naming_file_column_and_row(tmp_path, text, expected):
    path = _csv(tmp_path, text)
    error = job_line("system=duffing", "data=csv", f"data.path={path}")
    assert error.startswith(f"lagfit: error: data.path: {path}:")
    for part in expected:
        assert part in error, error


def test_a_run_on_a_bad_csv_is_one_line_and_no_results(lagfit):
    path = _csv(lagfit.tmp_path, "q0,qd0,qdd0\n" + GOOD_ROWS + "0.1,abc,0.3\n")
    error = one_error_line(lagfit("system=duffing", "data=csv", f"data.path={path}"))
    assert error.startswith(f"lagfit: error: data.path: {path}:") and "row 6 (file line 7)" in error
    assert job_line("system=duffing", "data=csv", f"data.path={path}") == error


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["data=csv"], "data.path: data=csv needs the file"),
        (["data=csv", "data.path=/no/such/file.csv"], "/no/such/file.csv: no such file"),
        (["data=csv", "data.path=x.csv", "data.columns={position: q0}"], "data.columns: 'position'"),
        (["system.params.m=null"], "system.params.m: data=grid makes synthetic data"),
        (["system.params.m=null", "data=csv", "data.path=x.csv", "check.max_ratio_rel_error=0.1"],
         "check.max_ratio_rel_error: needs known true values"),
        (["data=uniform", "data.n_points=0"], "data.n_points"),
        # (the memory estimate comes first, and depends on the machine's free memory: lifted)
        (["system=double_pendulum", "data=grid", "limits.max_memory_gb=1e6"],
         "data.n: a grid of 50 points per state variable"),
        (["system.params.m=abc"], "system.params.m: must be a finite number or null"),
    ],
)
def test_bad_data_settings_are_one_clear_line(tmp_path, monkeypatch, overrides, expected):
    # the job's checks and the data set-up (whole runs of both kinds: tests/test_cli.py and
    # the bad CSV file above)
    monkeypatch.chdir(tmp_path)  # a relative data.path is read from here, as in a run
    error = job_line(*overrides)
    assert error.startswith("lagfit: error:") and expected in error, error


def test_unknown_truths_check_the_mass_matrix_at_the_starting_box(tmp_path):
    path = tmp_path / "measured.csv"
    write_duffing_csv(path, n=20)
    error = job_line(
        "system=duffing", "data=csv", f"data.path={path}",
        "system.params={m: null, k: null, beta: null}", "init.center=0.0",
    )
    assert "mass matrix" in error and "centre of the initial guesses" in error and "m=0" in error
