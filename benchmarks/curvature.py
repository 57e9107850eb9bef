"""The curvature tools against the products they are made of, side by side in one run.

    python benchmarks/curvature.py            # writes tables/benchmark_curvature.md (+ sidecar)

Two models, float64: the escape experiment's MLP (digits, 64-64-64-10 tanh, d = 8,970, 500 examples)
and a convolutional network (digits as 8x8 images: two 3x3 convolutions with 16 and 32 channels, each
followed by GroupNorm and ReLU, 2x2 average pooling, a linear layer; d = 10,026, 512 examples; 64 for
``model_flatness``). Each tool is timed against the same products written by hand, each product one
jitted function of ``(params, batch, vector)`` called in a Python loop:

* ``hessian_trace`` with ``n`` probes against ``n`` Hessian-vector products;
* ``hessian_top_eigenvalue`` with Lanczos depth ``k`` against ``k + 1`` products;
* ``model_flatness`` against its trace probes, ``k + 1`` Lanczos products, its gradient probes' third-order
  products (``grad_x z^T H z``) and the Jacobian's rows, 64 vector-Jacobian products at a time, then the
  projection on the Jacobian's null space (the library's dense solve, jitted).

Each timing is the median of ``--repeats`` calls after a warm-up (compilation excluded), the candidates
interleaved round by round; the target is at most 1.5x.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

jax.config.update("jax_enable_x64", True)  # the benchmarks measure the float64 computations

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import flatmin  # noqa: E402
from flatmin import nets, provenance as prov  # noqa: E402
from flatmin._products import hvp_program, trace_gradient_program, vjp_rows_program  # noqa: E402
from flatmin.model_flatness import tangent_projection  # noqa: E402

TARGET_RATIO = 1.5


class ConvNet(eqx.Module):
    layers: list

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.layers = [eqx.nn.Conv2d(1, 16, 3, padding=1, key=k1), eqx.nn.GroupNorm(4, 16), jax.nn.relu,
                       eqx.nn.Conv2d(16, 32, 3, padding=1, key=k2), eqx.nn.GroupNorm(4, 32), jax.nn.relu,
                       eqx.nn.AvgPool2d(2, 2), jnp.ravel, eqx.nn.Linear(512, 10, key=k3)]

    def __call__(self, image):
        for layer in self.layers:
            image = layer(image)
        return image


def conv_model():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    model = ConvNet(jax.random.PRNGKey(0))
    model = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model)
    images = jnp.asarray(x[:512].reshape(-1, 1, 8, 8) / 16)

    def predict(m, batch):
        return jax.vmap(m)(batch[0])

    def loss(m, batch):
        return 0.5 * jnp.mean(jnp.sum((predict(m, batch) - batch[1]) ** 2, axis=1))

    return "convolutional network", model, loss, predict, (images, jax.nn.one_hot(y[:512], 10))


def mlp_model():
    data = nets.load_data("digits", n_train=500, n_test=1297, seed=0)
    model, x0 = nets.RaveledMLP.create(jax.random.PRNGKey(0), [64, 64, 64, 10], "tanh", "mse")

    def loss(p, batch):
        return model.mean_loss(p, *batch)

    def predict(p, batch):
        return model.logits(p, batch[0])

    return "escape MLP", x0, loss, predict, (jnp.asarray(data["x"]), jnp.asarray(data["y"]))


def median_times(candidates: dict, repeats: int) -> dict:
    """Median seconds per call of each candidate, timed round-robin after one warm-up call each."""
    for fn in candidates.values():
        jax.block_until_ready(fn())
    samples = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            samples[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print("  " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in medians.items()), flush=True)
    return medians


def by_hand(program, fn, params, batch, vectors):
    """``program``'s product at each of ``vectors``, one jitted call each."""
    return [program(fn, params, batch, v) for v in vectors]


def measure_model(name, params, loss, predict, batch, flatness_examples, trace_probes, gradient_probes,
                  repeats) -> list[tuple]:
    print(f"{name}:", flush=True)
    key = jax.random.PRNGKey(1)
    d = ravel_pytree(eqx.filter(params, eqx.is_inexact_array))[0].size
    depth = 30
    signs = np.asarray(jax.random.rademacher(key, (max(trace_probes + depth + 1, gradient_probes), d), dtype=jnp.float64))
    rows = []
    times = median_times({
        "hessian_trace": lambda: flatmin.hessian_trace(loss, params, batch, key, trace_probes),
        "by hand": lambda: by_hand(hvp_program, loss, params, batch, signs[:trace_probes]),
    }, repeats)
    rows.append((name, f"`hessian_trace`, {trace_probes} probes", f"{trace_probes} products", times))
    times = median_times({
        "hessian_top_eigenvalue": lambda: flatmin.hessian_top_eigenvalue(loss, params, batch, key, num_matvecs=depth),
        "by hand": lambda: by_hand(hvp_program, loss, params, batch, signs[:depth + 1]),
    }, repeats)
    rows.append((name, f"`hessian_top_eigenvalue`, depth {depth}", f"{depth + 1} products", times))

    small = jax.tree.map(lambda a: a[:flatness_examples], batch)
    outputs = int(np.size(eqx.filter_eval_shape(predict, params, small)))

    def blocks():  # the Jacobian's rows 64 at a time, as model_flatness takes them (zero rows past the end)
        return (np.eye(64, outputs, k=start) for start in range(0, outputs, 64))

    project = jax.jit(tangent_projection)

    def flatness_by_hand():
        by_hand(hvp_program, loss, params, small, signs[:trace_probes + depth + 1])
        samples = jnp.stack(by_hand(trace_gradient_program, loss, params, small, signs[:gradient_probes])) / d
        rows = jnp.concatenate(by_hand(vjp_rows_program, predict, params, small, blocks()))[:outputs]
        return project(rows, samples, key)

    times = median_times({
        "model_flatness": lambda: flatmin.model_flatness(loss, predict, params, small, key, trace_probes=trace_probes,
                                                         gradient_probes=gradient_probes, num_matvecs=depth),
        "by hand": flatness_by_hand,
    }, max(1, repeats // 3))
    rows.append((name, f"`model_flatness`, {flatness_examples} examples",
                 f"{trace_probes + depth + 1} products, {gradient_probes} third-order, {outputs} rows, the projection",
                 times))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "tables" / "benchmark_curvature.md")
    args = parser.parse_args(argv)
    started = time.time()
    rows = []
    name, params, loss, predict, batch = conv_model()
    rows += measure_model(name, params, loss, predict, batch, 64, 8, 4, args.repeats)
    name, params, loss, predict, batch = mlp_model()
    rows += measure_model(name, params, loss, predict, batch, 500, 20, 100, args.repeats)

    machine = prov.machine()
    lines = ["# Curvature benchmark", "",
             f"Machine: {machine['cpu']}, {machine['cores']} cores available. Each tool against the same "
             "products written by hand (each a jitted function of params, batch and a vector, called in a "
             f"Python loop), median of {args.repeats} calls ({max(1, args.repeats // 3)} for `model_flatness`) "
             "after a warm-up, interleaved in one process (`benchmarks/curvature.py`).", "",
             "| model | tool | products | tool | by hand | ratio | target |", "|---|---|---|---|---|---|---|"]
    for model, tool, products, times in rows:
        library, hand = [v for k, v in times.items() if k != "by hand"][0], times["by hand"]
        verdict = "met" if library / hand <= TARGET_RATIO else "**not met**"
        lines.append(f"| {model} | {tool} | {products} | {library:.2f} s | {hand:.2f} s | {library / hand:.2f}x | "
                     f"at most {TARGET_RATIO}x: {verdict} |")
    text = "\n".join(lines) + "\n"
    info = prov.provenance({"repeats": args.repeats}, [1], started)
    prov.write_markdown(args.out, text, info)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
