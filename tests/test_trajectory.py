"""data=trajectory: reading time series (core/trajectory_file.py) and its one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from lagfit_cli.core.trajectory_file import read_trajectories
from lagfit_cli.errors import LagfitError


def write(path, text):
    path.write_text(text)
    return path


def test_runs_from_a_run_column_and_from_a_glob(tmp_path):
    t = np.arange(6) * 0.1
    lines = ["run,t,q0,qd0,Q0,label"]
    lines += [f"a,{x:.1f},{np.sin(x)},{np.cos(x)},0.5,x" for x in t]
    lines += [f"b,{x:.1f},{2 * x},2,0.25,y" for x in t[:4]]  # a shorter run
    write(tmp_path / "one.csv", "\n".join(lines) + "\n")
    traj = read_trajectories(tmp_path / "one.csv")
    assert [r.name for r in traj.runs] == ["a", "b"]
    assert [r.n_samples for r in traj.runs] == [6, 4]
    np.testing.assert_allclose(traj.runs[0].q[:, 0], np.sin(t))
    np.testing.assert_allclose(traj.runs[1].qd[:, 0], 2.0)
    assert traj.has_forces and traj.runs[1].Q[0, 0] == 0.25

    (tmp_path / "runs").mkdir()
    for k in range(3):
        write(tmp_path / "runs" / f"r{k}.csv", "time,theta\n" + "".join(f"{x},{k + x}\n" for x in t[: 4 + k]))
    traj = read_trajectories(str(tmp_path / "runs" / "*.csv"), columns={"t": "time", "q0": "theta"})
    assert [r.name for r in traj.runs] == ["r0.csv", "r1.csv", "r2.csv"]
    assert [r.n_samples for r in traj.runs] == [4, 5, 6]
    assert traj.coordinate_names == ("theta",) and not traj.has_forces


def test_unwrap_scale_trim_outliers_and_irregular_sampling(tmp_path):
    t = np.linspace(0, 2, 201)
    angle = 4.0 * t  # passes π: recorded wrapped into (−π, π]
    wrapped = np.angle(np.exp(1j * angle))
    pixels = 100.0 * np.sin(t)
    pixels[50] += 40.0  # a tracking glitch
    rows = "".join(f"{a:.17g},{b:.17g},{c:.17g}\n" for a, b, c in zip(t, pixels, wrapped))
    write(tmp_path / "rig.csv", "t,q0,q1\n" + rows)
    traj = read_trajectories(
        tmp_path / "rig.csv", unwrap=["q1"], scale={"q0": 0.01}, trim=[0.1, 0.2], outliers=6.0
    )
    run = traj.runs[0]
    assert run.t[0] == pytest.approx(0.1) and run.t[-1] == pytest.approx(1.8)
    assert not np.any(np.isclose(run.t, t[50]))  # the glitch is dropped, with a warning
    assert any("outlying" in w for w in traj.warnings)
    keep = np.isin(t, run.t)
    np.testing.assert_allclose(run.q[:, 0], np.sin(t[keep]), atol=1e-12)
    np.testing.assert_allclose(run.q[:, 1], angle[keep], atol=1e-12)
    assert any("irregular sampling" in w for w in traj.warnings)  # the dropped sample left a gap
    assert not any("wrapped angle" in w for w in traj.warnings)
    wrapped_only = read_trajectories(tmp_path / "rig.csv")
    assert any("q0, q1 jump by more than π" in w and "data.unwrap=[q0,q1]" in w for w in wrapped_only.warnings)


MALFORMED = {
    "no_time": ("x,q0\n0,1\n1,2\n", "missing time column 't'"),
    "no_position": ("t,theta\n0,1\n1,2\n", "missing column 'q0'"),
    "back": ("t,q0\n0,1\n0.2,2\n0.1,3\n", "row 3 (file line 4): time goes back"),
    "duplicate": ("t,q0\n0,1\n0.1,2\n0.1,3\n", "row 3 (file line 4): duplicate time 0.1"),
    "nan_gap": ("t,q0\n0,1\n0.1,nan\n0.2,3\n", "column 'q0', row 2 (file line 3): a gap (NaN"),
    "empty_cell": ("t,q0\n0,1\n0.1,\n0.2,3\n", "column 'q0', row 2 (file line 3): a gap (empty cell"),
    "text": ("t,q0\n0,1\n0.1,abc\n0.2,3\n", "column 'q0', row 2 (file line 3): not a number: 'abc'"),
    "few_samples": ("t,q0\n" + "".join(f"{i / 10},{i}\n" for i in range(8)), "run '0' has 8 samples; derivatives=spline needs"),
    "partial_forces": ("t,q0,q1,Q0\n" + "".join(f"{i / 10},{i},{i},0\n" for i in range(40)), "missing column 'Q1'"),
}


def test_malformed_files_fail_in_the_reader(tmp_path):
    """Every case: one error naming the file, the column and the row (``path: FILE: ...``)."""
    for case, (text, expected) in MALFORMED.items():
        path = write(tmp_path / f"{case}.csv", text)
        min_samples, dof = (21, 1) if case == "few_samples" else (2, 2 if case == "partial_forces" else 1)
        with pytest.raises(LagfitError) as err:
            read_trajectories(path, dof=dof, min_samples=min_samples, need_text="derivatives=spline needs ")
        message = str(err.value)
        assert message.startswith(f"path: {path}: ") and "\n" not in message, message
        assert expected in message, (case, message)


#: the same errors through the command line (the reader's errors all take this path): a row
#: error, and the two whose limits come from the config (derivatives=, the system's D)
CLI_CASES = ("nan_gap", "few_samples", "partial_forces")


def test_malformed_files_fail_in_one_line(lagfit, tmp_path):
    """Through the command line (in-process): exit 2, one line naming the file, the column
    and the row, no run folder."""
    for case in CLI_CASES:
        text, expected = MALFORMED[case]
        path = write(tmp_path / f"{case}.csv", text)
        system = "system=double_pendulum" if case == "partial_forces" else "system=harmonic"
        result = lagfit(system, "data=trajectory", f"data.path={path}", "report.figures=false")
        assert result.returncode == 2, (case, result.stderr)
        lines = [line for line in result.stderr.strip().splitlines() if line]
        assert len(lines) == 1, (case, result.stderr)
        assert lines[0].startswith("lagfit: error: data.path: ") and str(path) in lines[0], lines[0]
        assert expected in lines[0], (case, lines[0])
        assert not result.run_dir.exists()


def test_missing_files_and_bad_keys(lagfit, tmp_path):
    """A missing file through the command line (exit 2); the bad keys in process, on one
    composed config (the checks behind the same one-line errors)."""
    import copy

    from omegaconf import OmegaConf

    from conftest import compose
    from lagfit_cli.app.config import ConfigError, config_message, validate
    from lagfit_cli.app.tasks import TASKS

    result = lagfit("data=trajectory", f"data.path={tmp_path}/nothing*.csv")
    assert result.returncode == 2 and "no file matches this pattern" in result.stderr
    path = write(tmp_path / "ok.csv", "t,q0\n" + "".join(f"{i / 10},{i}\n" for i in range(30)))
    base = compose("data=trajectory", f"data.path={path}")
    for key, value, message in (("data.unwrap", ["q3"], "data.unwrap: 'q3' is not a coordinate"),
                                ("data.trim", [-1, 0], "data.trim: must be [start, end]")):
        cfg = copy.deepcopy(base)
        OmegaConf.update(cfg, key, value, merge=False)
        with pytest.raises((ConfigError, LagfitError)) as info:
            validate(cfg)
            TASKS[cfg.task.name](cfg)
        assert message in config_message(info.value), config_message(info.value)


def test_a_recording_of_t_and_theta_fits_end_to_end(lagfit, tmp_path):
    """The issue's user: a file with just t and an angle column fits (spline q̇, q̈), with
    metrics name the derivative method."""
    import json

    t = np.arange(0, 6, 0.01)
    w = np.sqrt(2.0)  # k/m = 2
    rows = "".join(f"{x:.2f},{0.8 * np.cos(w * x) + 0.1 * np.sin(w * x):.17g}\n" for x in t)
    path = write(tmp_path / "osc.csv", "time,theta\n" + rows)
    result = lagfit(
        "system=harmonic", "data=trajectory", f"data.path={path}", "data.time_column=time",
        "data.columns={q0: theta}", "init.n_starts=2", "uncertainty=none", "uncertainty.profiles=false",
        "report.figures=false",
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["derivatives"] == "spline" and metrics["data"] == "trajectory" and metrics["n_runs"] == 1
    assert metrics["ratios"]["k/m"]["estimate"] == pytest.approx(2.0, rel=1e-7)
    # task=fit adds the rollout check on a time series (its figure: tests/test_simulate.py)
    assert metrics["rollout"]["n_runs"] == 1 and (result.run_dir / "rollout.csv").is_file()


def test_a_wrapped_angle_left_wrapped_is_not_a_trusted_fit(lagfit):
    """examples/pendulum_runs.csv (scipy, not lagfit) records the angle wrapped into (−π, π]:
    read as it is, the reader warns and the fit, which then explains nothing, exits 3;
    with data.unwrap the same command fits g/l."""
    import json
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "pendulum_runs.csv"
    command = ("system=custom", 'system.lagrangian="0.5*m*l**2*qd**2 + m*g*l*cos(q)"',
               "system.params={m: null, l: null, g: null}", "data=trajectory", f"data.path={example}",
               "data.columns={q0: theta}", "init.n_starts=2", "uncertainty=none", "uncertainty.profiles=false",
               "rollout.enabled=false")  # the reader and the fit are the point (rollout: test_simulate)
    wrapped = lagfit(*command)
    assert wrapped.returncode == 3, wrapped.stderr
    assert "a wrapped angle? data.unwrap=[q0]" in wrapped.stderr
    assert "explains almost none of the data" in wrapped.stderr
    assert json.loads((wrapped.run_dir / "metrics.json").read_text())["fit_ok"] is False
    unwrapped = lagfit(*command, "data.unwrap=[q0]")
    assert unwrapped.returncode == 0, unwrapped.stderr
    g_over_l = json.loads((unwrapped.run_dir / "metrics.json").read_text())["ratios"]["g/l"]["estimate"]
    assert g_over_l == pytest.approx(13.08, rel=1e-6)
