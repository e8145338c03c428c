"""The compile policy: when ``torch.compile`` repays its cost, and how compiled calls run.

``solver.compile = auto | true | false``. ``torch.compile`` (inductor, C++ codegen) turns the
block-diagonal autograd graph of the ``broadcast`` solver into one fused loop over the B×N
points: no per-op dispatch, no (B, N) temporaries. The price is the compile itself (seconds,
see ``COMPILE_COST_S``), so ``auto`` compiles only when the expected eager time of the work
it is asked for exceeds that price (``should_compile``). Compiled calls run with the default
dtype set to the data's (inductor bakes the default dtype of factory ops in at trace time:
pytorch#184405, #109458), and every compiled variant is checked against the eager one in the
tests. ``vmap`` of ``jacfwd`` is not compiled (pytorch#151196, #154036).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Union

import torch
from torch import Tensor

from lagfit_cli.errors import ArgumentError

COMPILE_CHOICES = ("auto", "true", "false")

# --------------------------------------------------------------------------- cost model
# Measured on the project's 2-core CPU machine, float64, one thread, anharmonic system
# (wall clock on a shared, busy machine; see the issue-4 note). They only steer
# ``compile=auto``; a wrong guess costs time, never accuracy.

#: Seconds one compile costs in a fresh process: importing dynamo and inductor (~3 s) plus
#: tracing and C++ codegen of one graph (1–4 s; less with a warm on-disk inductor cache).
COMPILE_COST_S = 5.0
#: Eager seconds per point-evaluation (one start at one point), by kind of work.
EAGER_S_PER_POINT = {
    "generic_qdd": 150e-9,  # broadcast autograd graph, q̈ only
    "generic_step": 300e-9,  # ... and the θ-gradient through it
    "linear_qdd": 5e-9,  # basis products + solve
    "linear_step": 6e-9,  # chunked products + adjoint
    "closed_form_qdd": 8e-9,
}
#: Compiled seconds per point-evaluation (the fused loops), by kind of work.
COMPILED_S_PER_POINT = {
    "generic_qdd": 1e-9,
    "generic_step": 2e-9,
    "linear_qdd": 1e-9,  # at B ≥ FAST_LINEAR_MIN_STARTS; B = 1 reads the whole basis
    "linear_step": 3e-9,
    "closed_form_qdd": 0.8e-9,
}
#: Compiled ``fast`` uses the linear basis from this many starts up; below, the fused
#: ``broadcast`` loop, which reads only (q, q̇) where the basis is (2P+2)×N numbers.
FAST_LINEAR_MIN_STARTS = 4
#: Eager chunks hold about this many (start, point) pairs, so temporaries stay in cache.
EAGER_CHUNK_POINTS = 1 << 17
#: Compiled calls with less work than this (B × N) run single-threaded (see ``_Compiled``).
SERIAL_MAX_POINTS = 1 << 18


def check_compile(choice: Union[str, bool]) -> str:
    """Normalise a ``solver.compile`` value (YAML may hand over a bool) to auto|true|false."""
    if isinstance(choice, bool):
        return "true" if choice else "false"
    if choice not in COMPILE_CHOICES:
        raise ArgumentError(
            "compile", f"expected one of {', '.join(COMPILE_CHOICES)}; got {choice!r}"
        )
    return choice


def should_compile(choice: str, kind: str, point_evaluations: float) -> bool:
    """Whether ``choice`` (auto|true|false) compiles work of ``kind`` and this size.

    ``auto`` compiles when the eager time saved over ``point_evaluations`` (B × N × the
    number of calls expected) exceeds ``COMPILE_COST_S``.
    """
    choice = check_compile(choice)
    if choice != "auto":
        return choice == "true"
    saved = EAGER_S_PER_POINT[kind] - COMPILED_S_PER_POINT[kind]
    return point_evaluations * saved > COMPILE_COST_S


def break_even_points(kind: str) -> float:
    """The B × N × calls above which ``auto`` compiles work of ``kind``."""
    return COMPILE_COST_S / (EAGER_S_PER_POINT[kind] - COMPILED_S_PER_POINT[kind])


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Run with ``torch.get_default_dtype() == dtype`` (for tracing and compiled calls)."""
    previous = torch.get_default_dtype()
    if previous == dtype or not dtype.is_floating_point:
        yield
        return
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class Compiled:
    """``torch.compile(fn)``, compiled on first use, called under the data's default dtype.

    Shapes are static (``dynamic=False``): the fit calls with one shape throughout, static
    kernels are the fastest, and dynamo's automatic dynamic shapes break forward-mode AD
    inside vmap (symbolic strides). Each new shape recompiles; dynamo gives up after
    ``torch._dynamo.config.recompile_limit`` shapes per function and runs it eagerly.

    Calls whose work (B × N point evaluations) is below ``SERIAL_MAX_POINTS`` run a
    single-threaded build: an OpenMP fork/join costs more than such a loop, and on a busy
    machine a parallel region waits a whole scheduler tick (milliseconds) for its
    descheduled thread.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self._compiled: dict[bool, Callable[..., Any]] = {}

    def __call__(self, work: int, *tensors: Tensor) -> Any:
        serial = work < SERIAL_MAX_POINTS
        if serial not in self._compiled:
            options = {"cpp.threads": 1} if serial else None
            self._compiled[serial] = torch.compile(
                self._fn, fullgraph=True, dynamic=False, options=options
            )
        with default_dtype(tensors[0].dtype):
            return self._compiled[serial](*tensors)


