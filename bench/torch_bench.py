#!/usr/bin/env python
"""Torch side of issue 4's workloads, for side-by-side runs with bench/jax_reference.py.

    python bench/torch_bench.py w1 [--sizes 10000 1000000] [--dtype float64]
    python bench/torch_bench.py w2-step          # per-iteration step, 256 starts × 100×100 grid
    python bench/torch_bench.py w2 [--solver fast --compile auto]   # whole process, timed from outside

``--threads N`` sets torch's thread count; glibc's malloc thresholds are raised
(``fastpath.tune_allocator``) unless ``--no-tune-allocator``.

W2 (whole process) runs ``w2-child``: interpreter start, imports, data, ``make_loss_and_grad``,
200 iterations of the eq. 2 rate update, printing the result; the same fit as the JAX script
(θ_true = (2, 4, 0.1), starts θ_true × U(0.5, 1.5), ε₀ = 0.1, q, q̇ ∈ [-1, 1]). It has no
Hydra and writes no files: it is the floor under ``lagfit run task=fit``.
Prints tables only; writes nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

_PROCESS_START = time.perf_counter()  # before torch is imported
THETA_TRUE = (2.0, 4.0, 0.1)
EPS0 = 0.1


def grid_data(torch, system, grid: int, dtype):
    axis = torch.linspace(-1.0, 1.0, grid, dtype=dtype)
    q_grid, qd_grid = torch.meshgrid(axis, axis, indexing="ij")
    return q_grid.reshape(-1, 1), qd_grid.reshape(-1, 1)


def w2_problem(torch, args):
    """W2's data (anharmonic, grid × grid points), its q̈ targets and the starts (B, 3)."""
    from lagfit_cli.dynamics import SOLVERS
    from lagfit_cli.systems import ANHARMONIC

    dtype = getattr(torch, args.dtype)
    q, qd = grid_data(torch, ANHARMONIC, args.grid, dtype)
    theta_true = torch.tensor(THETA_TRUE, dtype=dtype)
    target = SOLVERS["closed_form"](ANHARMONIC, q, qd, theta_true[None])[0]
    generator = torch.Generator().manual_seed(0)
    theta = theta_true * (0.5 + torch.rand(args.n_starts, 3, generator=generator, dtype=dtype))
    return q, qd, target, theta


def w2_child(args) -> None:
    phases = [("start", _PROCESS_START)]
    import torch

    from lagfit_cli.dynamics import make_loss_and_grad
    from lagfit_cli.systems import ANHARMONIC

    phases.append(("imports", time.perf_counter()))  # torch + lagfit, from the script's start
    q, qd, target, theta = w2_problem(torch, args)
    step = make_loss_and_grad(
        ANHARMONIC, q, qd, target, args.solver, args.compile, expected_calls=args.n_iters
    )
    phases.append(("setup", time.perf_counter()))
    for i in range(args.n_iters):
        _, grad = step(theta)
        norm = torch.linalg.vector_norm(grad, dim=1, keepdim=True)
        theta = theta - EPS0 * torch.exp(-((EPS0 * norm) ** 3)) * grad
        if i == 0:
            phases.append(("first step", time.perf_counter()))
    phases.append((f"{args.n_iters - 1} steps", time.perf_counter()))
    final, _ = step(theta)
    print(" ".join(f"{name} {t1 - t0:.2f}s" for (_, t0), (name, t1) in zip(phases, phases[1:])),
          file=sys.stderr)
    best = int(final.argmin())
    ratios = theta[best] / theta[best, 0]
    print(f"w2-child {args.dtype} {args.solver} compile={args.compile}: best loss {float(final[best]):.3e}, "
          f"k/m {float(ratios[1]):.6f}, alpha/m {float(ratios[2]):.6f}")


def w2(args) -> None:
    cmd = [sys.executable, os.path.abspath(__file__), "w2-child", "--dtype", args.dtype,
           "--solver", args.solver, "--compile", args.compile, "--n-starts", str(args.n_starts),
           "--n-iters", str(args.n_iters), "--grid", str(args.grid), "--threads", str(args.threads)]
    if args.no_tune_allocator:
        cmd.append("--no-tune-allocator")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    times, out = [], ""
    for _ in range(args.process_repeats):
        start = time.perf_counter()
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - start)
        out = done.stdout.strip()
        print(f"  launch {len(times)}: {times[-1]:.2f} s ({done.stderr.strip().splitlines()[-1]})")
    print(f"W2 torch {args.dtype} {args.solver} compile={args.compile} threads={args.threads or 'default'} "
          f"tuned-malloc={not args.no_tune_allocator} whole process: "
          f"median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}, "
          f"{args.process_repeats} launches)  [{out}]")


def w1(args) -> None:
    import torch

    from lagfit_cli.benchmark import Method, solver_table
    from lagfit_cli.systems import ANHARMONIC

    dtype = getattr(torch, args.dtype)
    theta = torch.tensor([THETA_TRUE], dtype=dtype)
    methods = [Method(*m.split(":")) if ":" in m else Method(m) for m in args.methods]
    table = solver_table(ANHARMONIC, theta, methods, args.sizes, repeats=args.repeats, warmup=3,
                         max_seconds_per_call=args.max_seconds)
    print(f"# W1 torch {torch.__version__} {args.dtype}, threads {torch.get_num_threads()}, "
          f"tuned-malloc {not args.no_tune_allocator}, "
          f"load {os.getloadavg()[0]:.2f}")
    with __import__("pandas").option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))


def w2_step(args) -> None:
    import torch

    from lagfit_cli.benchmark import Method, step_table
    from lagfit_cli.systems import ANHARMONIC

    q, qd, target, theta = w2_problem(torch, args)
    methods = [Method(*m.split(":")) if ":" in m else Method(m) for m in args.methods]
    table = step_table(ANHARMONIC, theta, q, qd, target, methods, repeats=args.repeats)
    print(f"# W2 step torch {args.dtype}, threads {torch.get_num_threads()}, "
          f"tuned-malloc {not args.no_tune_allocator}, load {os.getloadavg()[0]:.2f}")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("w1", "w2-step", "w2", "w2-child"))
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**6])
    parser.add_argument("--methods", nargs="+", default=None,
                        help="solver or solver:compile, e.g. broadcast:true")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--max-seconds", type=float, default=5.0)
    parser.add_argument("--solver", default="fast")
    parser.add_argument("--compile", default="auto")
    parser.add_argument("--n-starts", type=int, default=256)
    parser.add_argument("--n-iters", type=int, default=200)
    parser.add_argument("--grid", type=int, default=100)
    parser.add_argument("--process-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-tune-allocator", action="store_true",
                        help="leave glibc's malloc thresholds alone (see fastpath.tune_allocator)")
    args = parser.parse_args()
    if args.what != "w2":
        import torch

        from lagfit_cli.fastpath import tune_allocator

        if args.threads:
            torch.set_num_threads(args.threads)
        if not args.no_tune_allocator:
            tune_allocator()
    if args.methods is None:
        args.methods = {
            "w1": ["closed_form", "closed_form:true", "vmap", "batched", "broadcast",
                   "broadcast:true", "linear", "linear:true", "fast"],
            "w2-step": ["fast:false", "fast:true", "broadcast:false", "broadcast:true",
                        "batched:false", "closed_form:false", "closed_form:true"],
        }.get(args.what, [])
    {"w1": w1, "w2-step": w2_step, "w2": w2, "w2-child": w2_child}[args.what](args)


if __name__ == "__main__":
    main()
