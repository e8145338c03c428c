"""The ``lagfit`` command: ``lagfit run <hydra overrides>`` and friends."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

USAGE = """\
usage: lagfit run [OVERRIDE ...]       run one experiment (Hydra overrides, e.g. system=anharmonic)
       lagfit run -m KEY=A,B ...       run a sweep (Hydra multirun)
       lagfit run --help               config groups, current config, examples
       lagfit run --cfg job            print the composed config and exit
       lagfit summarize DIR            (re)write DIR/summary.csv and summary.png of a sweep

Runs write CSV tables, figures, metrics.json and the exact config into
outputs/DATE/TIME/ (sweeps: outputs/multirun/DATE/TIME/N/, with summary.csv and
summary.png at outputs/multirun/DATE/TIME/ when the sweep ends).

examples:
  lagfit run system=harmonic noise.sigma=0.1
  lagfit run system=anharmonic init.n_starts=64
  lagfit run experiment=smoke
  lagfit run -m noise.sigma=0,0.01,0.1,1 seed=0,1,2
  lagfit run -m experiment=noise_sweep hydra/launcher=joblib
"""

COMMANDS = ("run", "summarize")


def error(message: str, code: int = 2) -> int:
    print(f"lagfit: error: {message}", file=sys.stderr)
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if args[0] == "--version":
        from importlib.metadata import version

        print(f"lagfit {version('lagfit-cli')}")
        return 0
    command, rest = args[0], args[1:]
    if command == "run":
        return run(rest)
    if command == "summarize":
        return summarize(rest)
    return error(f"unknown command {command!r}; commands: {', '.join(COMMANDS)} (see lagfit --help)")


def _override_value(args: Sequence[str], key: str) -> Optional[str]:
    for arg in args:
        if arg.startswith(key + "="):
            return arg.split("=", 1)[1]
    return None


def run(args: list[str]) -> int:
    """Run the Hydra app on ``args``; return the process exit code."""
    run_dir = _override_value(args, "hydra.run.dir")
    if run_dir and (Path(run_dir) / "metrics.json").exists() and not {"-m", "--multirun"} & set(args):
        return error(f"hydra.run.dir: {run_dir} already holds a finished run; choose another folder")

    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from lagfit_cli.app import hydra_app, sweeps
    from lagfit_cli.app.slurm import SweepInterrupted, SweepStopped

    hydra_app.FAILURES.clear()
    from lagfit_cli.io import sweep

    sweeps.RESULTS.clear()
    sweeps.STARTED.clear()
    saved_argv, saved_env = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = ["lagfit run", *args]
    # let config errors reach us as exceptions, to be told in one line
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_app.hydra_main()
    except (HydraException, OmegaConfBaseException) as exc:
        # Hydra checks every job's config before the first starts; should a sweep still stop
        # part-way, the jobs that ran are summarized, and a sweep that never began is removed
        for sweep_dir in sweeps.STARTED:
            if sweep_dir.is_dir() and sweep.job_dirs(sweep_dir):
                report_sweep(sweeps.write_or_explain(sweep_dir))
            elif sweep_dir.is_dir() and [p.name for p in sweep_dir.iterdir()] == ["multirun.yaml"]:
                (sweep_dir / "multirun.yaml").unlink()
                sweep_dir.rmdir()
        return error(describe_config_error(exc))
    except SweepInterrupted as exc:  # Ctrl-C while waiting on a cluster: the jobs go on there
        print(f"lagfit: {exc}", file=sys.stderr)
        return exc.exit_code
    except SweepStopped as exc:  # e.g. sbatch rejected the sweep: its reason, in one line
        return error(str(exc), exc.exit_code)
    except RuntimeError as exc:
        missing = re.match(r"Unknown plugin class : '(hydra_plugins\.(\w+)\.[\w.]+)'", str(exc))
        if missing is None:
            raise
        extra = "joblib" if "joblib" in missing.group(2) else "slurm"
        return error(f"hydra/launcher: the plugin {missing.group(2)} is not installed; "
                     f"install it with: pip install -e '.[{extra}]' (or pip install 'lagfit-cli[{extra}]')")
    except SystemExit as exit_:  # --help, --cfg, or an argument error
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved_argv
        if saved_env is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_env

    for failure in hydra_app.FAILURES:
        if not failure.keep_folder:
            hydra_app.remove_unfinished_run(failure.run_dir)
    # a sweep's jobs may have run in other processes: their folders tell how they ended
    sweep_codes = [report_sweep(result) for result in sweeps.RESULTS]
    if hydra_app.FAILURES or any(sweep_codes):
        if any(f.multirun for f in hydra_app.FAILURES) and not sweeps.RESULTS:
            print(f"lagfit: {len(hydra_app.FAILURES)} job(s) failed; see error.txt in their folders", file=sys.stderr)
        return max([f.exit_code for f in hydra_app.FAILURES] + sweep_codes)
    return 0


def report_sweep(result) -> int:
    """Tell where a sweep's summary is and how its jobs ended; return the sweep's exit code."""
    from lagfit_cli.io import sweep

    if result.table is None:
        print(f"lagfit: sweep {result.sweep_dir}: no summary: {result.problem}", file=sys.stderr)
        return 1
    code = sweep.exit_code(result.table)
    print(f"lagfit: sweep: {sweep.headline(result.table)}; summary in {result.sweep_dir / sweep.SUMMARY_CSV}",
          file=sys.stderr)
    for _, row in result.table[result.table["status"] != sweep.OK].iterrows():
        print(f"lagfit: job {row['job']} ({row['overrides']}): {row['status']}: {row['error']}", file=sys.stderr)
    return code


SUMMARIZE_USAGE = """\
usage: lagfit summarize DIR [--format png|pdf|svg]

Reads every job folder under DIR (a sweep: outputs/multirun/DATE/TIME/) and writes
DIR/summary.csv (one row per job: overrides, status, error, key metrics) and
DIR/summary.png. Every job planned in DIR/multirun.yaml has a row: one without a folder
is pending/not_started (or, on SLURM, what SLURM says: cancelled, timeout, ...).
Exit code: 0 if every planned job finished ok, else the largest job exit code.
"""


def summarize(args: list[str]) -> int:
    """``lagfit summarize DIR``: the sweep summary of an existing folder."""
    if not args or args[0] in ("-h", "--help"):
        print(SUMMARIZE_USAGE, end="")
        return 0 if args else 2
    figure_format = "png"
    if len(args) == 3 and args[1] == "--format":
        figure_format = args[2]
    elif len(args) != 1:
        return error(f"summarize takes one folder (and --format FMT), got {' '.join(args)!r}")
    if figure_format not in ("png", "pdf", "svg"):
        return error(f"--format: must be one of pdf, png, svg; got {figure_format!r}")
    from lagfit_cli.app import sweeps

    result = sweeps.write_or_explain(Path(args[0]), figure_format)
    if result.table is None:
        return error(result.problem)
    return report_sweep(result)


def describe_config_error(exc: BaseException) -> str:
    """One line from Hydra's/OmegaConf's multi-line config errors (and their causes)."""
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    first = re.sub(r"^In '[^']*': ", "", first)
    override = getattr(exc, "override", None)  # a parse error names the override it choked on
    if override:
        return f"cannot parse override '{override}': {first}"
    options = re.search(r"Available options in '([^']+)':\n((?:\t.*\n?)+)", text)
    if options:
        names = ", ".join(line.strip() for line in options.group(2).splitlines() if line.strip())
        return f"{first}; available options in '{options.group(1)}': {names}"
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        return f"{first.rstrip('.')}: {str(cause).strip().splitlines()[0]}"
    return first


def entry_point() -> None:
    sys.exit(main())
