r"""Initial guesses: where the fit's B starts begin.

``box`` (the seed report's §2.2): uniform in [c − w, c + w] per parameter around a centre c,
the true value where one is known. ``decades``: log-uniform over ``decades`` decades either
side of the centre, c·10^U(−d, d), with a random sign only where the centre is negative: a
guess that does not assume the answer within a box, for data whose truth is unknown.

Every draw comes from the caller's seeded generator, on the CPU, so the same seed gives the
same starts on every device. A start at which eq. 6 cannot be solved (a singular or
indefinite mass matrix somewhere on the data, a non-finite q̈) is redrawn, up to
``MAX_REDRAWS`` times, instead of being left frozen.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from lagfit_cli.errors import ArgumentError
from lagfit_cli.core.registry import Registry

#: how often a start whose mass matrix is singular on the data is drawn again
MAX_REDRAWS = 20

#: name -> draw(center (P,), n, width, generator) -> (n, P) float64
Draw = Callable[[Tensor, int, float, torch.Generator], Tensor]
STARTS: Registry[Draw] = Registry("initial-guess sampling", "init")


@STARTS.register("box")
def box(center: Tensor, n: int, width: float, generator: torch.Generator) -> Tensor:
    """Uniform in [c − width, c + width] per parameter."""
    unit = torch.rand((n, center.shape[0]), generator=generator, dtype=torch.float64)
    return center + width * (2 * unit - 1)


@STARTS.register("decades")
def decades(center: Tensor, n: int, width: float, generator: torch.Generator) -> Tensor:
    """|c|·10^U(−width, width) with c's sign (1 where c = 0): ``width`` decades either side."""
    unit = torch.rand((n, center.shape[0]), generator=generator, dtype=torch.float64)
    magnitude = torch.where(center == 0, torch.ones_like(center), center.abs())
    sign = torch.where(center < 0, -torch.ones_like(center), torch.ones_like(center))
    return sign * magnitude * 10.0 ** (width * (2 * unit - 1))


def initial_guesses(
    kind: str,
    center: Tensor,
    n: int,
    width: float,
    generator: torch.Generator,
    usable: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, int]:
    """n starts (n, P) float64 drawn by ``kind``; starts that ``usable`` rejects are redrawn.

    Args:
        usable: theta (B, P) -> (B,) bool, e.g. "the mass matrix is definite at every data
            point"; ``None`` accepts every draw.

    Returns:
        the starts, and how many of them are still unusable after ``MAX_REDRAWS`` rounds.
    """
    if n < 1:
        raise ArgumentError("n_starts", f"must be at least 1, got {n}")
    draw = STARTS.lookup(kind)
    guesses = draw(center, n, width, generator)
    if usable is None:
        return guesses, 0
    bad = ~usable(guesses)
    for _ in range(MAX_REDRAWS):
        if not bool(bad.any()):
            break
        fresh = draw(center, int(bad.sum()), width, generator)
        guesses[bad] = fresh
        bad[bad.clone()] = ~usable(fresh)
    return guesses, int(bad.sum())
