"""Cost of one perturbed-gradient step, side by side in one run.

    python benchmarks/perturbed_steps.py            # writes tables/benchmark_steps.md (+ sidecar)

On the escape experiment's MLP (scikit-learn digits, 64-64-64-10 tanh, d = 8,970, square loss, float64):

* one jitted ``flatmin.value_and_perturbed_grad`` step (SGD, RS, SA, SAM) against one jitted
  ``jax.value_and_grad`` of the same batch loss (batch 128; two gradients is the floor for RS, SA, SAM);
* the SA step called outside ``jit``, as in a plain Python loop (it compiles itself once).

The curvature tools are measured by ``benchmarks/curvature.py``.

Each timing is the median of ``--repeats`` runs of ``--inner`` calls after a warm-up (compilation
excluded), every candidate timed in the same process, interleaved round by round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)  # the benchmarks measure the float64 computations

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import flatmin  # noqa: E402
from flatmin import nets, provenance as prov  # noqa: E402

TARGET_SA_RATIO = 2.2


def escape_model():
    data = nets.load_data("digits", n_train=500, n_test=1297, seed=0)
    model, x0 = nets.RaveledMLP.create(jax.random.PRNGKey(0), [64, 64, 64, 10], "tanh", "mse")
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

    sa = flatmin.value_and_perturbed_grad(batch_loss, "sa", 0.2)
    eager = compare({"value_and_perturbed_grad sa, un-jitted": lambda: sa(x, batch, key)}, args.repeats, args.inner)

    base = step_times["jax.value_and_grad"]
    machine = prov.machine()
    lines = ["# Perturbed-step benchmark", "",
             f"Machine: {machine['cpu']}, {machine['cores']} cores available. Escape MLP (digits, "
             f"64-64-64-10 tanh, d = {x.size}, float64), batch 128; median of {args.repeats} rounds of "
             f"{args.inner} jitted calls, all candidates interleaved in one process.", "",
             "| step | time per call | ratio to `jax.value_and_grad` | target |", "|---|---|---|---|"]
    for name, seconds in step_times.items():
        target = f"at most {TARGET_SA_RATIO}x" if name.endswith(" sa") else ""
        lines.append(f"| `{name}` | {seconds * 1e6:.0f} us | {seconds / base:.2f}x | {target} |")
    unjitted = eager["value_and_perturbed_grad sa, un-jitted"]
    lines += ["", f"Called outside `jit` in a Python loop, the SA step takes {unjitted * 1e6:.0f} us per call, "
              f"{unjitted / step_times['value_and_perturbed_grad sa']:.2f}x its jitted call (the checks of the "
              "parameters and the dispatch of its compiled program).", ""]
    text = "\n".join(lines)
    info = prov.provenance({"repeats": args.repeats, "inner": args.inner}, [0], started)
    prov.write_markdown(args.out, text, info)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
