import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_default_dtype(torch.float64)


class LagfitRun:
    """Runs ``lagfit run ...`` as a user would: a subprocess, into a folder of tmp_path."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.count = 0

    def __call__(self, *overrides: str, run_dir: Path | None = None, timeout: float = 600):
        self.count += 1
        run_dir = run_dir or self.tmp_path / f"run{self.count}"
        cmd = [sys.executable, "-m", "lagfit_cli", "run", *overrides, f"hydra.run.dir={run_dir}"]
        proc = subprocess.run(cmd, cwd=self.tmp_path, capture_output=True, text=True, timeout=timeout)
        proc.run_dir = run_dir
        return proc


@pytest.fixture
def lagfit(tmp_path):
    return LagfitRun(tmp_path)


def uniform_states(n: int, dof: int = 1, seed: int = 0, scale: float = 1.0):
    """(q, q̇), each (n, dof) float64, uniform in [−scale, scale], from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    q = scale * (2 * torch.rand(n, dof, generator=generator, dtype=torch.float64) - 1)
    qd = scale * (2 * torch.rand(n, dof, generator=generator, dtype=torch.float64) - 1)
    return q, qd


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())
