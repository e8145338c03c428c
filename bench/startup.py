"""Start-up times of the lagfit command: each case run REPEATS times in a fresh process.

    python bench/startup.py [OUT.csv] [--repeats N]      (default: outputs/startup.csv)

Writes one row per case (case, command, median_s, min_s, max_s, repeats, exit_code) and
prints the table. Goals (issue 9): --help and run --help < 1.5 s, a bad-input error < 2 s.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "lagfit --help": ["--help"],
    "lagfit run --help": ["run", "--help"],
    "bad input (noise.sigma=-1)": ["run", "noise.sigma=-1"],
    "unknown key (+foo=1)": ["run", "+foo=1"],
    "run --cfg job": ["run", "--cfg", "job"],
}


def time_case(args: list[str], repeats: int, cwd: Path) -> tuple[list[float], int]:
    times, code = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "lagfit_cli", *args], cwd=cwd, capture_output=True)
        times.append(time.perf_counter() - started)
        code = proc.returncode
    return times, code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="outputs/startup.csv")
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:  # no run folder lands in the checkout
        for case, args in CASES.items():
            times, code = time_case(args, opts.repeats, Path(tmp))
            rows.append({
                "case": case, "command": "lagfit " + " ".join(args),
                "median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
                "max_s": round(max(times), 3), "repeats": opts.repeats, "exit_code": code,
            })
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        print(f"{row['case']:<30} median {row['median_s']:.3f} s  (min {row['min_s']:.3f}, max {row['max_s']:.3f}; exit {row['exit_code']})")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
