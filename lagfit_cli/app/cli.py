"""The ``lagfit`` command: ``lagfit run <hydra overrides>`` and friends."""

from __future__ import annotations

import contextlib
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
    from lagfit_cli.errors import printable

    print(f"lagfit: error: {printable(message)}", file=sys.stderr)
    return code


def interrupted() -> int:
    print("lagfit: interrupted", file=sys.stderr)
    return 130


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # the command writes figure files only: matplotlib's file backend, also in a sweep's
    # worker processes (they inherit the environment); the library never chooses one
    os.environ["MPLBACKEND"] = "Agg"
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if args[0] == "--version":
        from importlib.metadata import version

        print(f"lagfit {version('lagfit-cli')}")
        return 0
    command, rest = args[0], args[1:]
    try:
        if command == "run":
            return run(rest)
        if command == "summarize":
            return summarize(rest)
    except KeyboardInterrupt:
        return interrupted()
    except Exception as exc:  # noqa: BLE001  lagfit's own bug, outside any job: still one line
        if os.environ.get("LAGFIT_TRACEBACK"):
            raise
        from lagfit_cli.app.hydra_app import crash_line

        return error(f"{crash_line(exc)} (a bug in lagfit; LAGFIT_TRACEBACK=1 shows the traceback)", 1)
    return error(f"unknown command {command!r}; commands: {', '.join(COMMANDS)} (see lagfit --help)")


def run(args: list[str]) -> int:
    """Run the Hydra app on ``args``; return the process exit code.

    The run folder is claimed when the job starts, whatever spelled it (app/rundir.py).
    """
    if {"-h", "--help"} & set(args):
        return run_help([arg for arg in args if not arg.startswith("-")])
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from lagfit_cli.app import hydra_app, rundir, sweeps
    from lagfit_cli.errors import LagfitError
    from lagfit_cli.app.slurm import SweepInterrupted, SweepStopped

    hydra_app.FAILURES.clear()
    sweeps.RESULTS.clear()
    sweeps.STARTED.clear()
    saved_argv, saved_env = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = ["lagfit run", *args]
    # let config errors reach us as exceptions, to be told in one line
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        with one_composition(args):
            hydra_app.hydra_main()
    except rundir.RunDirRefused as refused:
        return error(refused.message)
    except KeyboardInterrupt:
        return interrupted()
    except LagfitError as exc:
        return error(str(exc))
    except (HydraException, OmegaConfBaseException) as exc:
        # Hydra checks every job's config before the first starts; should a sweep still stop
        # part-way, the jobs that ran are summarized, and a sweep that never began is removed
        from lagfit_cli.io import sweep

        for sweep_dir in sweeps.STARTED:
            if sweep_dir.is_dir() and sweep.job_dirs(sweep_dir):
                report_sweep(sweeps.write_or_explain(sweep_dir))
            elif sweep_dir.is_dir() and {p.name for p in sweep_dir.iterdir()} <= {"multirun.yaml", rundir.LOCK_FILE}:
                for name in ("multirun.yaml", rundir.LOCK_FILE):
                    (sweep_dir / name).unlink(missing_ok=True)
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
        rundir.release_all()
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


#: arguments through which a config lagfit does not ship, or an override, could set hydra.mode
MODE_SOURCES = ("hydra.mode", "hydra.searchpath", "--config-dir", "-cd", "--config-path", "-cp",
                "--config-name", "-cn")


@contextlib.contextmanager
def one_composition(args: list[str]):
    """Compose the config once per command, not twice.

    Before running, Hydra 1.3 composes the whole config only to read ``hydra.mode``, then
    composes it again to run: half of the start-up of a small run (≈0.25 s of ≈0.5 s).
    lagfit's own configs never set ``hydra.mode`` (a test composes them to check), so that
    first composition answers None (run or ``-m``, as typed) unless an argument in
    :data:`MODE_SOURCES` could change it; then Hydra composes twice, as it always does.
    """
    from hydra._internal.hydra import Hydra

    if any(arg.lstrip("+~").startswith(MODE_SOURCES) for arg in args):
        yield
        return
    composed_mode = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: None
    try:
        yield
    finally:
        Hydra.get_mode = composed_mode


def run_help(overrides: list[str]) -> int:
    """``lagfit run [OVERRIDE ...] --help``: lagfit's config groups, the composed config, examples.

    The text is Hydra's help template (conf/hydra/help/lagfit.yaml); lagfit fills it itself
    because Hydra's own --help also walks every group of Hydra and its plugins (2-3 s).
    """
    import copy
    import string

    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, flag_override
    from omegaconf.errors import OmegaConfBaseException

    import lagfit_cli.conf
    from lagfit_cli.app.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("lagfit_cli.conf", version_base="1.3"):
            cfg = compose("config", overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as exc:
        return error(describe_config_error(exc))
    finally:
        GlobalHydra.instance().clear()
    template = cfg.hydra.help.template
    job = copy.deepcopy(cfg)
    with flag_override(job, ["struct", "readonly"], False):
        del job["hydra"]
    conf = Path(lagfit_cli.conf.__file__).parent
    groups = "".join(
        f"{group.name}: {', '.join(sorted(p.stem for p in group.glob('*.yaml')))}\n"
        for group in sorted(conf.iterdir(), key=lambda p: p.name)
        if group.is_dir() and group.name != "hydra" and any(group.glob("*.yaml"))
    )
    print(string.Template(template).substitute(
        APP_CONFIG_GROUPS=groups, CONFIG=OmegaConf.to_yaml(job), FLAGS_HELP="", HYDRA_CONFIG_GROUPS=""
    ))
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
    """The ``lagfit`` command: the one caller that may tune the whole process (app/process.py)."""
    from lagfit_cli.app.process import TUNE_PROCESS_ENV

    os.environ[TUNE_PROCESS_ENV] = "1"
    sys.exit(main())
