"""Every solver, every compiled variant and the fused fit step against the closed forms.

Small shapes only; one compiled variant per path (compiling costs seconds). No timings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pytest
import torch

from lagfit_cli.core.solvers import (
    SOLVERS,
    linear_basis,
    make_loss_and_grad,
    make_solver,
)
from lagfit_cli.errors import LagfitError
from lagfit_cli.core.solvers import break_even_points, check_compile, should_compile
from lagfit_cli.core.systems import ANHARMONIC, HARMONIC, System

F64 = torch.float64
RTOL = 1e-10


@dataclass(frozen=True)
class FlaggedSystem(System):
    """A System that declares (rightly or not) whether L is linear in θ."""

    linear_in_params: Optional[bool] = None


def _coupled_lagrangian(q, qd, theta):
    """Two coupled oscillators with a constant, non-diagonal mass matrix (D = 2)."""
    m1, m2, c, k1, k2 = (theta[..., i] for i in range(5))
    v1, v2, x1, x2 = qd[..., 0], qd[..., 1], q[..., 0], q[..., 1]
    kinetic = 0.5 * m1 * v1**2 + 0.5 * m2 * v2**2 + c * v1 * v2
    return kinetic - 0.5 * k1 * x1**2 - 0.5 * k2 * (x2 - x1) ** 2


def _coupled_qdd(q, qd, theta):
    m1, m2, c, k1, k2 = (theta[..., i] for i in range(5))
    x1, x2 = q[..., 0], q[..., 1]
    force = torch.stack((-k1 * x1 + k2 * (x2 - x1), -k2 * (x2 - x1)), dim=-1)
    mass = torch.stack((torch.stack((m1, c), -1), torch.stack((c, m2), -1)), -2)
    mass, force = torch.broadcast_tensors(mass, force[..., None])[0], force
    return torch.linalg.solve(mass, force)


COUPLED = System(
    "coupled", _coupled_lagrangian, ("m1", "m2", "c", "k1", "k2"), dof=2, closed_form=_coupled_qdd
)


def _affine_lagrangian(q, qd, theta):
    """L = ½ q̇² − ½ k q² − β q⁴: a θ-free kinetic term (the basis' offset)."""
    return 0.5 * qd[..., 0] ** 2 - 0.5 * theta[..., 0] * q[..., 0] ** 2 - theta[..., 1] * q[..., 0] ** 4


def _affine_qdd(q, qd, theta):
    return (-theta[..., 0] * q[..., 0] - 4 * theta[..., 1] * q[..., 0] ** 3).unsqueeze(-1)


AFFINE = System("affine", _affine_lagrangian, ("k", "beta"), dof=1, closed_form=_affine_qdd)


def _squared_lagrangian(q, qd, theta):
    """L = ½ m q̇² − ½ k² q²: not linear in θ."""
    return 0.5 * theta[..., 0] * qd[..., 0] ** 2 - 0.5 * theta[..., 1] ** 2 * q[..., 0] ** 2


def _squared_qdd(q, qd, theta):
    return (-(theta[..., 1] ** 2) / theta[..., 0] * q[..., 0]).unsqueeze(-1)


SQUARED = System("squared", _squared_lagrangian, ("m", "k"), dof=1, closed_form=_squared_qdd)

THETAS = {
    "harmonic": [[2.0, 4.0], [1.0, 3.0], [0.5, -1.0]],
    "anharmonic": [[2.0, 4.0, 0.1], [1.5, 3.0, -0.2], [3.0, 1.0, 0.3]],
    "coupled": [[2.0, 1.5, 0.3, 4.0, 1.0], [1.0, 2.0, -0.4, 2.0, 3.0]],
    "affine": [[4.0, 0.5], [1.0, -0.3]],
    "squared": [[2.0, 4.0], [1.0, -3.0]],
}
SYSTEMS_UNDER_TEST = [HARMONIC, ANHARMONIC, COUPLED, AFFINE, SQUARED]


def _data(system: System, n_points: int = 24, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    q = (torch.rand(n_points, system.dof, generator=generator, dtype=F64) * 2 - 1) * 0.9
    qd = torch.rand(n_points, system.dof, generator=generator, dtype=F64) * 2 - 1
    theta = torch.tensor(THETAS[system.name], dtype=F64)
    return q, qd, theta


def _assert_close(actual, expected, rtol=RTOL):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    scale = expected.abs().max().clamp_min(1e-300)
    assert float((actual - expected).abs().max() / scale) <= rtol


def _closed_form_step(system, q, qd, target, theta):
    """Loss and θ-gradient through the closed form, by plain autograd (the reference)."""
    theta = theta.clone().requires_grad_(True)
    loss = (SOLVERS["closed_form"](system, q, qd, theta) - target).square().mean(dim=(1, 2))
    (grad,) = torch.autograd.grad(loss.sum(), theta)
    return loss.detach(), grad


def _expects_linear_error(system, name):
    return name == "linear" and system is SQUARED


# --------------------------------------------------------------------------- eager


@pytest.mark.parametrize("system", SYSTEMS_UNDER_TEST, ids=lambda s: s.name)
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_every_solver_matches_closed_form(system, name):
    q, qd, theta = _data(system, n_points=6 if name == "loop" else 24)
    if _expects_linear_error(system, name):
        with pytest.raises(LagfitError, match="not linear"):
            SOLVERS[name](system, q, qd, theta)
        return
    _assert_close(SOLVERS[name](system, q, qd, theta), SOLVERS["closed_form"](system, q, qd, theta))


@pytest.mark.parametrize("system", SYSTEMS_UNDER_TEST, ids=lambda s: s.name)
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_eager_step_matches_closed_form_gradient(system, name):
    """make_loss_and_grad(compile=false) for every solver: loss and ∂loss/∂θ."""
    q, qd, theta = _data(system, n_points=5 if name == "loop" else 24)
    target = SOLVERS["closed_form"](system, q, qd, theta[:1])[0] + 0.01 * q  # loss > 0 at every start
    if _expects_linear_error(system, name):
        with pytest.raises(LagfitError, match="not linear"):
            make_loss_and_grad(system, q, qd, target, name, compile="false")
        return
    loss, grad = make_loss_and_grad(system, q, qd, target, name, compile="false")(theta)
    ref_loss, ref_grad = _closed_form_step(system, q, qd, target, theta)
    _assert_close(loss, ref_loss)
    _assert_close(grad, ref_grad)


@pytest.mark.parametrize("name", ["broadcast", "linear", "fast", "batched"])
def test_solver_gradient_through_autograd(name):
    """The solvers stay differentiable in θ (the fit may use torch.autograd directly)."""
    q, qd, theta = _data(ANHARMONIC)
    jac = torch.autograd.functional.jacobian(lambda t: SOLVERS[name](ANHARMONIC, q, qd, t), theta)
    ref = torch.autograd.functional.jacobian(
        lambda t: SOLVERS["closed_form"](ANHARMONIC, q, qd, t), theta
    )
    _assert_close(jac, ref)


def test_eager_step_chunks_many_starts():
    """More starts than one eager chunk holds: the chunks must line up."""
    q, qd, _ = _data(ANHARMONIC, n_points=2000)
    generator = torch.Generator().manual_seed(1)
    theta = torch.tensor([2.0, 4.0, 0.1], dtype=F64) * (0.5 + torch.rand(70, 3, generator=generator, dtype=F64))
    target = SOLVERS["closed_form"](ANHARMONIC, q, qd, theta[:1])[0]
    ref_loss, ref_grad = _closed_form_step(ANHARMONIC, q, qd, target, theta)
    for name in ("fast", "broadcast"):
        loss, grad = make_loss_and_grad(ANHARMONIC, q, qd, target, name, compile="false")(theta)
        _assert_close(loss, ref_loss, rtol=1e-9)
        _assert_close(grad, ref_grad, rtol=1e-9)


# --------------------------------------------------------------------------- linear basis


def test_linear_basis_detects_linearity_and_offset():
    q, qd, _ = _data(ANHARMONIC)
    basis = linear_basis(ANHARMONIC, q, qd, compile="false")
    assert basis is not None and basis.offset_rhs is None and basis.hessian.shape == (3, 24, 1, 1)
    q, qd, _ = _data(AFFINE)
    affine = linear_basis(AFFINE, q, qd, compile="false")
    assert affine is not None and affine.offset_hessian is not None
    q, qd, _ = _data(SQUARED)
    assert linear_basis(SQUARED, q, qd, compile="false") is None


def test_linear_flag_is_verified_never_trusted():
    q, qd, theta = _data(SQUARED)
    wrong = FlaggedSystem(**{**SQUARED.__dict__, "name": "wrong", "linear_in_params": True})
    with pytest.raises(LagfitError, match="declares linear_in_params=True"):
        linear_basis(wrong, q, qd, compile="false")
    declared_nonlinear = FlaggedSystem(**{**ANHARMONIC.__dict__, "linear_in_params": False})
    q, qd, theta = _data(ANHARMONIC)
    assert linear_basis(declared_nonlinear, q, qd, compile="false") is None
    with pytest.raises(LagfitError, match="declared nonlinear"):
        SOLVERS["linear"](declared_nonlinear, q, qd, theta)
    _assert_close(  # fast falls back to broadcast
        SOLVERS["fast"](declared_nonlinear, q, qd, theta),
        SOLVERS["closed_form"](ANHARMONIC, q, qd, theta),
    )


def test_fast_keeps_gradients_to_the_states():
    q, qd, theta = _data(ANHARMONIC)
    q.requires_grad_(True)
    (d_fast,) = torch.autograd.grad(SOLVERS["fast"](ANHARMONIC, q, qd, theta).sum(), q)
    (d_ref,) = torch.autograd.grad(SOLVERS["closed_form"](ANHARMONIC, q, qd, theta).sum(), q)
    _assert_close(d_fast, d_ref)


def test_basis_cache_sees_in_place_changes():
    q, qd, theta = _data(ANHARMONIC)
    first = SOLVERS["linear"](ANHARMONIC, q, qd, theta)
    q.mul_(0.5)
    _assert_close(SOLVERS["linear"](ANHARMONIC, q, qd, theta), SOLVERS["closed_form"](ANHARMONIC, q, qd, theta))
    assert not torch.allclose(first, SOLVERS["linear"](ANHARMONIC, q, qd, theta))


# --------------------------------------------------------------------------- compile policy


def test_compile_policy_values():
    assert check_compile(True) == "true" and check_compile(False) == "false"
    assert check_compile("auto") == "auto"
    with pytest.raises(LagfitError, match="compile: expected"):
        check_compile("sometimes")
    assert not should_compile("auto", "generic_qdd", 1e3)
    assert should_compile("auto", "generic_qdd", 10 * break_even_points("generic_qdd"))
    assert should_compile("true", "linear_step", 1) and not should_compile("false", "linear_step", 1e12)
    with pytest.raises(LagfitError, match="cannot be compiled"):
        make_solver(next(n for n, f in SOLVERS.items() if not f.compilable), compile="true")
    with pytest.raises(LagfitError, match="unknown solver"):
        make_solver("nope")


def test_auto_on_small_work_stays_eager():
    q, qd, theta = _data(ANHARMONIC)
    for name in ("broadcast", "fast", "vmap", "loop"):
        solver = make_solver(name, compile="auto")
        _assert_close(solver(ANHARMONIC, q[:4], qd[:4], theta), SOLVERS["closed_form"](ANHARMONIC, q[:4], qd[:4], theta))


# --------------------------------------------------------------------------- compiled (slow-ish)


@pytest.mark.parametrize(
    "name, system",
    [
        ("broadcast", COUPLED),
        ("linear", ANHARMONIC),
        ("closed_form", ANHARMONIC),
        ("linear", COUPLED),
        ("fast", COUPLED),
    ],
    ids=["broadcast", "linear", "closed_form", "linear-2dof", "fast-2dof-few-starts"],
)
def test_compiled_solver_matches_eager_and_closed_form(name, system):
    """``broadcast`` and ``fast`` with fewer starts than FAST_LINEAR_MIN_STARTS run the same
    compiled broadcast graph on the same 2-coordinate data: traced once, checked twice (the
    1-coordinate broadcast graph is compiled in test_compiled_step_matches_closed_form_gradient)."""
    q, qd, theta = _data(system)
    compiled = make_solver(name, compile="true")(system, q, qd, theta)
    _assert_close(compiled, SOLVERS[name](system, q, qd, theta))
    _assert_close(compiled, SOLVERS["closed_form"](system, q, qd, theta))


@pytest.mark.parametrize(
    "name, system",
    [("fast", ANHARMONIC), ("broadcast", ANHARMONIC), ("fast", AFFINE)],
    ids=["linear-fused", "generic-functional", "linear-offset"],
)
def test_compiled_step_matches_closed_form_gradient(name, system):
    q, qd, theta = _data(system)
    target = SOLVERS["closed_form"](system, q, qd, theta[:1])[0] + 0.01 * q
    loss, grad = make_loss_and_grad(system, q, qd, target, name, compile="true")(theta)
    ref_loss, ref_grad = _closed_form_step(system, q, qd, target, theta)
    _assert_close(loss, ref_loss)
    _assert_close(grad, ref_grad)


def test_compiled_float32_keeps_its_dtype():
    """Compiled under a float64 default, called with float32 data: float32 out, right values."""
    q, qd, theta = (t.float() for t in _data(ANHARMONIC))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        compiled = make_solver("linear", compile="true")(ANHARMONIC, q, qd, theta)
    finally:
        torch.set_default_dtype(previous)
    _assert_close(compiled, SOLVERS["closed_form"](ANHARMONIC, q, qd, theta), rtol=1e-5)


def test_tune_allocator_is_harmless():
    """In a child process: mallopt changes the whole process, never the shared test worker.

    The child is forked from this worker (torch and the solvers are imported already, so it
    costs milliseconds, not a fresh interpreter's seconds); it tunes its allocator, checks
    the return value and a solver's numbers, and reports through its exit status.
    """
    import os
    import platform
    import sys
    import time
    import traceback

    from lagfit_cli.app.process import tune_allocator

    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            ok = tune_allocator()
            assert ok is (sys.platform.startswith("linux") and "glibc" in " ".join(platform.libc_ver()))
            q = torch.linspace(-1, 1, 50, dtype=torch.float64)[:, None]
            theta = torch.tensor([[2.0, 4.0, 0.5]], dtype=torch.float64)
            a = SOLVERS["fast"](ANHARMONIC, q, q.flip(0), theta)
            b = SOLVERS["closed_form"](ANHARMONIC, q, q.flip(0), theta)
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
            code = 0
        except BaseException:  # noqa: BLE001  reported through the exit status
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 120
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not finish in 120 s")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0
