"""Cost of one perturbed-gradient step and of the curvature estimators, side by side in one run.

    python benchmarks/perturbed_steps.py            # writes tables/benchmark_steps.md (+ sidecar)

On the escape experiment's MLP (scikit-learn digits, 64-64-64-10 tanh, d = 8,970, square loss, float64):

* one jitted ``flatmin.value_and_perturbed_grad`` step (SGD, RS, SA, SAM) against one jitted
  ``jax.value_and_grad`` of the same batch loss (batch 128; two gradients is the floor for RS, SA, SAM);
* ``flatmin.hessian_trace`` against the same Hutchinson estimate written by hand with ``jax.jvp`` (same
  probes), and ``flatmin.model_flatness`` at the paper profile's size (all 500 training examples).

Each timing is the median of ``--repeats`` runs of ``--inner`` calls after a warm-up (compilation
excluded), every candidate timed in the same process, interleaved round by round.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import flatmin  # noqa: E402
from flatmin import nets, provenance as prov  # noqa: E402

TARGET_SA_RATIO = 2.2


def escape_model():
    data = nets.load_data("digits", n_train=500, n_test=1297, seed=0)
    model, x0 = nets.FlatMLP.create(jax.random.PRNGKey(0), [64, 64, 64, 10], "tanh", "mse")
    return model, x0, jnp.asarray(data["x"]), jnp.asarray(data["y"])


def timed(fn, inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / inner


def compare(candidates: dict, repeats: int, inner: int) -> dict:
    """Median seconds per call of each candidate, timed round-robin."""
    for fn in candidates.values():
        jax.block_until_ready(fn())  # compile
    samples = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            samples[name].append(timed(fn, inner))
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--inner", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "tables" / "benchmark_steps.md")
    args = parser.parse_args(argv)
    started = time.time()

    model, x, inputs, labels = escape_model()
    idx = jnp.arange(128)
    batch = (inputs[idx], labels[idx])

    def batch_loss(params, b):
        return model.mean_loss(params, *b)

    key = jax.random.PRNGKey(0)
    plain = jax.jit(jax.value_and_grad(batch_loss))
    steps = {"jax.value_and_grad": lambda: plain(x, batch)}
    for method in ("sgd", "rs", "sa", "sam"):
        fn = jax.jit(flatmin.value_and_perturbed_grad(batch_loss, method, 0.2))
        steps[f"value_and_perturbed_grad {method}"] = lambda fn=fn: fn(x, batch, key)
    step_times = compare(steps, args.repeats, args.inner)

    full = (inputs, labels)
    probes = 20
    library = jax.jit(lambda p: flatmin.hessian_trace(batch_loss, p, full, key, probes))

    @jax.jit
    def by_hand(p):
        zs = jax.random.rademacher(key, (probes, p.size), dtype=p.dtype)
        grad = jax.grad(lambda y: batch_loss(y, full))
        values = jax.vmap(lambda z: z @ jax.jvp(grad, (p,), (z,))[1])(zs)
        return values.mean(), values.std(ddof=1) / math.sqrt(probes)

    trace_times = compare({"hessian_trace": lambda: library(x), "by hand (jax.jvp)": lambda: by_hand(x)},
                          args.repeats, max(1, args.inner // 10))
    agreement = abs(float(library(x)[0]) - float(by_hand(x)[0])) / abs(float(by_hand(x)[0]))

    flatness = jax.jit(lambda p: flatmin.model_flatness(batch_loss, lambda q, b: model.logits(q, b[0]), p, full, key,
                                                       trace_probes=probes))
    jax.block_until_ready(flatness(x))
    flatness_time = timed(lambda: flatness(x), 2)

    base = step_times["jax.value_and_grad"]
    machine = prov.machine()
    lines = ["# Step and curvature benchmark", "",
             f"Machine: {machine['cpu']}, {machine['cores']} cores available. Escape MLP (digits, "
             f"64-64-64-10 tanh, d = {x.size}, float64), batch 128; median of {args.repeats} rounds of "
             f"{args.inner} jitted calls, all candidates interleaved in one process.", "",
             "| step | time per call | ratio to `jax.value_and_grad` | target |", "|---|---|---|---|"]
    for name, seconds in step_times.items():
        target = f"at most {TARGET_SA_RATIO}x" if name.endswith(" sa") else ""
        lines.append(f"| `{name}` | {seconds * 1e6:.0f} us | {seconds / base:.2f}x | {target} |")
    lines += ["", f"Hessian trace, {probes} Rademacher probes, all 500 training examples:", "",
              "| estimator | time per call | ratio |", "|---|---|---|"]
    for name, seconds in trace_times.items():
        lines.append(f"| {name} | {seconds * 1e3:.1f} ms | {seconds / trace_times['by hand (jax.jvp)']:.2f}x |")
    lines += ["", f"The two estimates agree to {agreement:.1e} relative (the same probes).", "",
              f"`flatmin.model_flatness` at this model (5,000 outputs, 100 gradient probes, {probes} trace "
              f"probes, Lanczos depth 30): {flatness_time:.1f} s per point.", ""]
    text = "\n".join(lines)
    info = prov.provenance({"repeats": args.repeats, "inner": args.inner}, [0], started)
    prov.write_markdown(args.out, text, info)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
