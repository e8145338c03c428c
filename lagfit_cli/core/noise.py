"""Gaussian noise on a dataset: on the q, q̇ inputs (as in the seed report), the q̈ targets, or both."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from lagfit_cli.core.data import Dataset

#: what ``noise.apply_to`` may name, and which of the dataset's fields each perturbs
NOISE_TARGETS: dict[str, tuple[str, ...]] = {
    "inputs": ("q", "qd"),
    "targets": ("qdd",),
    "both": ("q", "qd", "qdd"),
}


def add_noise(data: Dataset, sigma: float, apply_to: str, generator: torch.Generator) -> Dataset:
    """A copy of ``data`` with N(0, σ²) noise added to the fields ``apply_to`` names.

    The draws are made on the CPU from ``generator`` in a fixed order (q, q̇, q̈), so the
    same seed gives the same noise on every device.
    """
    if sigma == 0:
        return data
    perturbed: dict[str, object] = {}
    for name in NOISE_TARGETS[apply_to]:
        clean: Tensor = getattr(data, name)
        draw = torch.randn(clean.shape, generator=generator, dtype=torch.float64)
        perturbed[name] = clean + sigma * draw.to(device=clean.device, dtype=clean.dtype)
    if "q" in perturbed:  # perturbed inputs no longer lie on the grid they came from
        perturbed["grid_shape"] = None
    return replace(data, **perturbed)
