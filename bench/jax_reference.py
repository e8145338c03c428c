#!/usr/bin/env python
r"""JAX reference for the speed targets of issue 4 (W1: q̈ only; W2: a whole fit).

Standalone: run it with a Python that has ``jax``, ``jaxlib`` and ``numpy`` (not lagfit's
venv), for example::

    python3 -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install jax jaxlib numpy
    /tmp/jaxenv/bin/python bench/jax_reference.py            # W1 + W2, float64 and float32
    /tmp/jaxenv/bin/python bench/jax_reference.py w1 --dtype float64
    /tmp/jaxenv/bin/python bench/jax_reference.py w2 --dtype float64   # times a child process

System: the anharmonic oscillator L = ½ m q̇² − ½ k q² − α q² q̇² (D = 1, θ = (m, k, α)).
q̈ is computed *from L* as the Lagrangian Neural Networks code does: ``jax.grad`` /
``jax.jacfwd`` per point for ∇_q L, ∇_q̇∇_q̇ᵀL and ∇_q∇_q̇ᵀL, eq. 6, ``vmap`` over points,
``jit`` around it. The D×D solve is a division for D = 1 (lagfit does the same;
``--solve solve|pinv`` picks ``jnp.linalg.solve`` / the LNN code's ``pinv`` instead).

W1: q̈ at 10⁴ and 10⁶ points, one θ; median of ``--repeats`` timed calls after warm-up
(compile excluded), ``block_until_ready`` on every call.

W2: gradient descent from 256 starts for 200 iterations on a 100×100 (q, q̇) grid, all starts
at once: loss_b = mean_n (q̈_b − q̈_true)², g_b = ∂loss_b/∂θ_b, ε_b = ε₀ exp(−(ε₀|g_b|)³),
θ_b ← θ_b − ε_b g_b. Timed *from outside* as a whole process (interpreter start, imports,
compile, 200 steps, printing the result): ``w2`` launches ``w2-child`` with ``subprocess``
and reports the median wall time over ``--process-repeats`` launches. ``--loop python`` jits
one step and loops in Python; ``--loop fori`` jits the whole fit as one ``lax.fori_loop``.

Only timings are printed; nothing is written to disk.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

THETA_TRUE = (2.0, 4.0, 0.1)  # m, k, alpha: m − 2αq² > 0 on the grid
BOUNDS = (-1.0, 1.0)  # q and q̇ range of the W2 grid
EPS0 = 0.1


def _setup(dtype: str):
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")
    import jax.numpy as jnp

    return jax, jnp, (jnp.float64 if dtype == "float64" else jnp.float32)


def build_qdd(jax, jnp, solve: str):
    """q̈(q: (D,), q̇: (D,), θ: (P,)) -> (D,) from L by autodiff (the LNN recipe)."""

    def lagrangian(q, qd, theta):
        m, k, alpha = theta[0], theta[1], theta[2]
        return 0.5 * m * qd[0] ** 2 - 0.5 * k * q[0] ** 2 - alpha * q[0] ** 2 * qd[0] ** 2

    def qdd_point(q, qd, theta):
        grad_q = jax.grad(lagrangian, 0)(q, qd, theta)
        d_qd = jax.grad(lagrangian, 1)
        hessian = jax.jacfwd(d_qd, 1)(q, qd, theta)
        mixed = jax.jacfwd(d_qd, 0)(q, qd, theta)  # ∂²L/∂q̇_i∂q_j
        rhs = grad_q - mixed @ qd
        if solve == "div":
            return rhs / hessian[:, 0] if q.shape[0] == 1 else jnp.linalg.solve(hessian, rhs)
        if solve == "solve":
            return jnp.linalg.solve(hessian, rhs)
        return jnp.linalg.pinv(hessian) @ rhs

    return qdd_point


def _median_time(fn, repeats: int, warmup: int) -> tuple[float, float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def run_w1(dtype: str, sizes: list[int], repeats: int, solve: str) -> None:
    jax, jnp, jdtype = _setup(dtype)
    qdd_point = build_qdd(jax, jnp, solve)
    qdd_all = jax.jit(jax.vmap(qdd_point, in_axes=(0, 0, None)))
    closed = jax.jit(
        lambda q, qd, th: (-th[1] * q + 2 * th[2] * q * qd**2) / (th[0] - 2 * th[2] * q**2)
    )
    theta = jnp.asarray(THETA_TRUE, dtype=jdtype)
    print(f"# W1 q̈ only, jax {jax.__version__}, {dtype}, solve={solve}, "
          f"devices={jax.devices()}, threads: {os.cpu_count()} cpus")
    for n in sizes:
        key_q, key_qd = jax.random.split(jax.random.PRNGKey(n))
        q = jax.random.uniform(key_q, (n, 1), dtype=jdtype, minval=-1, maxval=1)
        qd = jax.random.uniform(key_qd, (n, 1), dtype=jdtype, minval=-1, maxval=1)
        start = time.perf_counter()
        qdd_all(q, qd, theta).block_until_ready()
        compile_s = time.perf_counter() - start
        err = float(jnp.max(jnp.abs(qdd_all(q, qd, theta) - closed(q, qd, theta))))
        reps = repeats if n <= 10**5 else max(5, repeats // 4)
        for name, fn in (("autodiff", qdd_all), ("closed_form", closed)):
            med, lo, hi = _median_time(
                lambda fn=fn: fn(q, qd, theta).block_until_ready(), reps, warmup=3
            )
            print(f"W1 {dtype} {name:11s} n={n:>8d}: median {med * 1e3:9.4f} ms "
                  f"(min {lo * 1e3:.4f}, max {hi * 1e3:.4f}, {reps} reps)"
                  + (f"  first call {compile_s:.2f} s, max|Δ| vs closed {err:.1e}"
                     if name == "autodiff" else ""))


def run_w2_child(dtype: str, n_starts: int, n_iters: int, grid: int, loop: str, solve: str) -> None:
    """The whole fit, as one process would do it; prints a one-line summary."""
    jax, jnp, jdtype = _setup(dtype)
    qdd_point = build_qdd(jax, jnp, solve)
    axis = jnp.linspace(*BOUNDS, grid, dtype=jdtype)
    q_grid, qd_grid = jnp.meshgrid(axis, axis, indexing="ij")
    q = q_grid.reshape(-1, 1)
    qd = qd_grid.reshape(-1, 1)
    theta_true = jnp.asarray(THETA_TRUE, dtype=jdtype)
    qdd_all = jax.vmap(qdd_point, in_axes=(0, 0, None))
    target = qdd_all(q, qd, theta_true)

    def loss(theta):
        return jnp.mean((qdd_all(q, qd, theta) - target) ** 2)

    loss_and_grad = jax.vmap(jax.value_and_grad(loss))

    def step(theta):
        losses, grads = loss_and_grad(theta)
        norm = jnp.sqrt(jnp.sum(grads**2, axis=1, keepdims=True))
        eps = EPS0 * jnp.exp(-((EPS0 * norm) ** 3))
        return theta - eps * grads, losses

    key = jax.random.PRNGKey(0)
    theta0 = theta_true * jax.random.uniform(key, (n_starts, 3), dtype=jdtype, minval=0.5, maxval=1.5)

    if loop == "python":
        step_jit = jax.jit(step)
        theta = theta0
        for _ in range(n_iters):
            theta, losses = step_jit(theta)
    else:
        @jax.jit
        def fit(theta):
            def body(_, carry):
                return step(carry[0])

            return jax.lax.fori_loop(0, n_iters, body, (theta, jnp.zeros(n_starts, jdtype)))

        theta, losses = fit(theta0)
    theta.block_until_ready()
    final = loss_and_grad(theta)[0]  # the loss at the final θ
    best = int(jnp.argmin(final))
    ratios = theta[best] / theta[best, 0]
    print(f"w2-child {dtype} loop={loop}: best loss {float(final[best]):.3e}, "
          f"k/m {float(ratios[1]):.6f}, alpha/m {float(ratios[2]):.6f}")


def run_w2(dtype: str, repeats: int, loop: str, solve: str, **sizes) -> None:
    cmd = [sys.executable, os.path.abspath(__file__), "w2-child", "--dtype", dtype,
           "--loop", loop, "--solve", solve]
    for key, value in sizes.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
        times.append(time.perf_counter() - start)
    print(f"W2 {dtype} loop={loop} whole process ({sizes}): median {statistics.median(times):.2f} s "
          f"(min {min(times):.2f}, max {max(times):.2f}, {repeats} launches)  [{out}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", nargs="?", default="all", choices=("all", "w1", "w2", "w2-child"))
    parser.add_argument("--dtype", choices=("float64", "float32", "both"), default="both")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**6])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--solve", choices=("div", "solve", "pinv"), default="div")
    parser.add_argument("--loop", choices=("python", "fori"), default="python")
    parser.add_argument("--process-repeats", type=int, default=3)
    parser.add_argument("--n-starts", type=int, default=256)
    parser.add_argument("--n-iters", type=int, default=200)
    parser.add_argument("--grid", type=int, default=100)
    args = parser.parse_args()
    dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype,)
    sizes = dict(n_starts=args.n_starts, n_iters=args.n_iters, grid=args.grid)
    if args.what == "w2-child":
        run_w2_child(dtypes[0], loop=args.loop, solve=args.solve, **sizes)
        return
    for dtype in dtypes:
        # each dtype in its own process: x64 is a process-wide switch
        if args.what in ("all", "w1"):
            subprocess.run([sys.executable, os.path.abspath(__file__), "w1-one", dtype,
                            str(args.repeats), args.solve, *map(str, args.sizes)], check=True)
        if args.what in ("all", "w2"):
            run_w2(dtype, args.process_repeats, args.loop, args.solve, **sizes)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "w1-one":
        _, _, dtype_, repeats_, solve_, *sizes_ = sys.argv
        run_w1(dtype_, [int(s) for s in sizes_], int(repeats_), solve_)
    else:
        main()
