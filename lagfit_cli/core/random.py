"""One seeded generator per named stream, so that e.g. changing n_starts never changes the
noise: every random draw of a run comes from ``generator(seed, stream)``, on the CPU."""

from __future__ import annotations

import hashlib

import torch

#: independent random streams of one seed
STREAMS = {"data": 0, "noise": 1, "init": 2, "auto_lr": 3, "noise_study": 4, "bootstrap": 5}


def generator(seed: int, stream: str) -> torch.Generator:
    """A CPU generator for one named stream of one seed."""
    digest = hashlib.sha256(f"{seed}:{STREAMS[stream]}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
