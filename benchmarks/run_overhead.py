"""Cost of ``flatmin.run`` against the floor, side by side in one run.

    python benchmarks/run_overhead.py            # writes tables/benchmark_run.md (+ sidecar)
    python benchmarks/run_overhead.py --quick    # a smoke run of a few seconds

RS with the eps0 gate always open (``eps0 = inf``) on the valley ``f(u, w) = 0.5 (1 + |u|^2) |w|^2``,
``u, w`` of dimension ``d/2``, from ``u = 1, w = 0.01``:

* per step, warm (compiled): ``flatmin.run`` (``measure=False``, one checkpoint at the end) against the
  same step written by hand as a jitted ``jax.lax.fori_loop`` vmapped over replicas (the floor in JAX), a
  numpy loop seed after seed, and numpy vectorized over replicas by hand, at d in {10, 100, 1000} and
  replicas in {1, 8, 32};
* a call at a shape already compiled but with a new ``eta_prime`` (a sweep point, default checkpoints)
  against its compute, the hand-written JAX loop of the same length;
* how the cost of a warm call grows with the number of steps.

Each timing is the median of ``--repeats`` rounds, every candidate timed in the same process, interleaved
round by round; numpy runs fewer steps (``--numpy-steps``), its cost per step being flat in the length.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)  # the benchmarks measure the float64 computations

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import flatmin  # noqa: E402
from flatmin import provenance as prov  # noqa: E402

PARAMS = {"eta": 0.01, "eta_prime": 1e-3, "rho": 1e-2, "eps0": math.inf}
TARGETS = {1: 1.5, 32: 1.3}
TARGET_REPEAT_CALL = 3.0


def valley(d: int) -> flatmin.Problem:
    m = d // 2
    return flatmin.Problem("valley", d, lambda x: 0.5 * (1.0 + jnp.sum(x[:m] ** 2)) * jnp.sum(x[m:] ** 2))


def starts(d: int, replicas: int) -> np.ndarray:
    m = d // 2
    return np.tile(np.r_[np.ones(m), np.full(d - m, 0.01)], (replicas, 1))


def jax_floor(problem: flatmin.Problem, steps: int):
    """The RS step with the gate open, by hand: ``x - eta' (g + Proj_perp(g) grad f(x + rho z))``."""
    grad = jax.grad(problem.loss)
    rho, eta_prime = PARAMS["rho"], PARAMS["eta_prime"]

    def one_seed(x, key):
        def step(t, x):
            z = jax.random.normal(jax.random.fold_in(key, t), x.shape, x.dtype)
            g = grad(x)
            w = grad(x + rho * z / jnp.linalg.norm(z))
            return x - eta_prime * (g + w - (g @ w) / (g @ g) * g)

        return jax.lax.fori_loop(0, steps, step, x)

    return jax.jit(jax.vmap(one_seed))


def numpy_gradient(x: np.ndarray) -> np.ndarray:
    """Gradient of the valley for ``x`` ``(..., d)``."""
    m = x.shape[-1] // 2
    u, w = x[..., :m], x[..., m:]
    return np.concatenate([u * np.sum(w * w, axis=-1, keepdims=True),
                           (1.0 + np.sum(u * u, axis=-1, keepdims=True)) * w], axis=-1)


def numpy_steps(x: np.ndarray, steps: int, rng: np.random.Generator) -> np.ndarray:
    """RS with the gate open on ``x`` ``(d,)`` or ``(replicas, d)``, vectorized over the leading axis."""
    rho, eta_prime = PARAMS["rho"], PARAMS["eta_prime"]
    for _ in range(steps):
        z = rng.standard_normal(x.shape)
        g = numpy_gradient(x)
        w = numpy_gradient(x + rho * z / np.linalg.norm(z, axis=-1, keepdims=True))
        coefficient = np.sum(g * w, axis=-1, keepdims=True) / np.sum(g * g, axis=-1, keepdims=True)
        x = x - eta_prime * (g + w - coefficient * g)
    return x


def timed(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def compare(candidates: dict, repeats: int) -> dict:
    """Median seconds per call of each candidate, after one warm-up call each, timed round-robin."""
    for fn in candidates.values():
        timed(fn)
    samples = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            samples[name].append(timed(fn))
    return {name: statistics.median(values) for name, values in samples.items()}


def per_step_row(d: int, replicas: int, steps: int, numpy_length: int, repeats: int) -> dict:
    """Microseconds per step of every candidate at ``d`` and ``replicas``."""
    problem, x0 = valley(d), starts(d, replicas)
    floor = jax_floor(problem, steps)
    keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(replicas))
    rng = np.random.default_rng(0)
    seconds = compare({
        "run": lambda: flatmin.run(problem, "rs", x0, PARAMS, steps, replicas, steps, measure=False).final,
        "jax": lambda: floor(jnp.asarray(x0), keys),
        "numpy per seed": lambda: [numpy_steps(x, numpy_length, rng) for x in x0],
        "numpy vectorized": lambda: numpy_steps(x0, numpy_length, rng),
    }, repeats)
    lengths = {"run": steps, "jax": steps, "numpy per seed": numpy_length, "numpy vectorized": numpy_length}
    return {name: value / lengths[name] * 1e6 for name, value in seconds.items()}


def repeat_call(d: int, replicas: int, steps: int, repeats: int) -> tuple[float, float, float]:
    """Seconds of the first call in this process, of a call with a new ``eta_prime`` (median over
    ``repeats`` new values), and of the hand-written loop of the same length."""
    problem, x0 = valley(d), starts(d, replicas)

    def call(eta_prime):
        return lambda: flatmin.run(problem, "rs", x0, {**PARAMS, "eta_prime": eta_prime}, steps, replicas,
                                   measure=False).final

    first = timed(call(PARAMS["eta_prime"]))
    swept = statistics.median(timed(call(PARAMS["eta_prime"] * (1.0 + 0.1 * (i + 1)))) for i in range(repeats))
    floor = jax_floor(problem, steps)
    keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(replicas))
    compute = compare({"jax": lambda: floor(jnp.asarray(x0), keys)}, repeats)["jax"]
    return first, swept, compute


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run of a few seconds")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4000, help="steps of the JAX candidates per call")
    parser.add_argument("--numpy-steps", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "tables" / "benchmark_run.md")
    args = parser.parse_args(argv)
    dims, replica_counts, sweep_steps, growth = (10, 100, 1000), (1, 8, 32), 20_000, (1000, 4000, 16_000)
    if args.quick:
        args.repeats, args.steps, args.numpy_steps = 1, 50, 5
        dims, replica_counts, sweep_steps, growth = (10,), (1,), 100, (50, 100)
    started = time.time()

    rows = {(d, r): per_step_row(d, r, args.steps, args.numpy_steps, args.repeats)
            for d in dims for r in replica_counts}
    sweep_d, sweep_replicas = dims[min(1, len(dims) - 1)], replica_counts[0]
    first, swept, compute = repeat_call(sweep_d, sweep_replicas, sweep_steps, args.repeats)
    problem, x0 = valley(sweep_d), starts(sweep_d, 1)
    growth_times = compare({t: lambda t=t: flatmin.run(problem, "rs", x0, PARAMS, t, 1, t, measure=False).final
                            for t in growth}, args.repeats)

    machine = prov.machine()
    lines = ["# `flatmin.run` overhead benchmark", "",
             f"Machine: {machine['cpu']}, {machine['cores']} cores available. RS, gate open, on the valley "
             f"`0.5 (1 + |u|^2) |w|^2` (float64); median of {args.repeats} rounds, all candidates interleaved "
             f"in one process; JAX candidates run {args.steps} steps per call, numpy {args.numpy_steps}.", "",
             "| d | replicas | `run` | JAX `fori_loop` by hand | numpy per seed | numpy vectorized "
             "| `run` / JAX | `run` / numpy vectorized | target |", "|---|---|---|---|---|---|---|---|---|"]
    for (d, r), us in rows.items():
        target = f"at most {TARGETS[r]}x" if r in TARGETS else ""
        lines.append(f"| {d} | {r} | {us['run']:.1f} us | {us['jax']:.1f} us | {us['numpy per seed']:.1f} us | "
                     f"{us['numpy vectorized']:.1f} us | {us['run'] / us['jax']:.2f}x | "
                     f"{us['run'] / us['numpy vectorized']:.2f}x | {target} |")
    lines += ["", f"A sweep point: `run` at d = {sweep_d}, {sweep_replicas} replica, {sweep_steps} steps, default "
              "checkpoints, with an `eta_prime` not seen before at a compiled shape:", "",
              "| call | time | ratio to its compute (the JAX loop by hand) | target |", "|---|---|---|---|",
              f"| first call in the process (compiles) | {first:.2f} s | {first / compute:.1f}x | |",
              f"| new `eta_prime`, same shape | {swept:.3f} s | {swept / compute:.2f}x | "
              f"at most {TARGET_REPEAT_CALL}x |",
              f"| compute: the JAX loop by hand | {compute:.3f} s | 1x | |", "",
              f"Growth with the number of steps (d = {sweep_d}, 1 replica, warm):", "",
              "| steps | time per call | per step |", "|---|---|---|"]
    for t, seconds in growth_times.items():
        lines.append(f"| {t} | {seconds * 1e3:.1f} ms | {seconds / t * 1e6:.1f} us |")
    lines.append("")
    text = "\n".join(lines)
    info = prov.provenance({"repeats": args.repeats, "steps": args.steps, "numpy_steps": args.numpy_steps,
                            "quick": args.quick}, [0], started)
    prov.write_markdown(args.out, text, info)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
