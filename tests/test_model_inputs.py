"""Bad input at the model API gets an error that names it, never a silent NaN or an error from deep in JAX."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flatmin
METHODS = ("sgd", "rs", "rs_noproj", "sa", "sam")


def radius(method, rho):
    """``rho`` for a method with a radius, None (not given) for one without."""
    return rho if "rho" in flatmin.get_method(method).params else None


def _loss(params, batch):
    return jnp.mean((batch[0] @ params["w"] - batch[1]) ** 2)


def _predict(params, batch):
    return batch[0] @ params["w"]


PARAMS = {"w": jnp.array([0.5, -0.2, 0.1]), "b": jnp.array([0.3])}
BATCH = (jnp.eye(3), jnp.ones(3))
KEY = jax.random.PRNGKey(0)


def _model_api_calls(loss_fn=_loss, predict_fn=_predict, params=PARAMS):
    calls = {f"value_and_perturbed_grad {m}": (lambda m=m: flatmin.value_and_perturbed_grad(loss_fn, m, radius(m, 0.1))(
        params, BATCH, KEY)) for m in METHODS}
    calls["hessian_trace"] = lambda: flatmin.hessian_trace(loss_fn, params, BATCH, KEY, 4)
    calls["hessian_top_eigenvalue"] = lambda: flatmin.hessian_top_eigenvalue(loss_fn, params, BATCH, KEY)
    calls["model_flatness"] = lambda: flatmin.model_flatness(loss_fn, predict_fn, params, BATCH, KEY, trace_probes=4)
    return calls


def test_non_finite_parameters_are_named_by_leaf():
    params = {**PARAMS, "w": PARAMS["w"].at[1].set(jnp.nan)}
    params["b"] = params["b"].at[0].set(jnp.inf)
    for name, call in _model_api_calls(params=params).items():
        with pytest.raises(ValueError, match=r"non-finite.*\['b'\] \(1 of 1 entries\), \['w'\] \(1 of 3 entries\)"):
            call()


def test_the_finite_check_costs_nothing_under_jit():
    """Under jit the values are unknown: no error, and no host round trip; NaN in, NaN out, as in JAX."""
    params = {**PARAMS, "w": PARAMS["w"].at[1].set(jnp.nan)}
    step = jax.jit(flatmin.value_and_perturbed_grad(_loss, "sa", 0.1))
    loss, _ = step(params, BATCH, KEY)
    assert np.isnan(loss)


def test_a_loss_that_is_not_a_scalar_is_named():
    def per_sample(params, batch):
        return (batch[0] @ params["w"] - batch[1]) ** 2

    for name, call in _model_api_calls(loss_fn=per_sample).items():
        with pytest.raises(TypeError, match=r"loss_fn\(params, batch\) must return a scalar.*shape \(3,\)"):
            call()


def test_parameters_without_a_floating_leaf_are_named():
    params = {"counts": jnp.arange(3), "activation": jnp.tanh}
    for name, call in _model_api_calls(loss_fn=lambda p, b: jnp.sum(p["counts"]) * 1.0, params=params).items():
        with pytest.raises(ValueError, match=r"params holds no floating-point array to differentiate \(its leaves: PjitFunction, int64 array\)"):
            call()


def test_predictions_that_ignore_the_parameters_are_named():
    with pytest.raises(ValueError, match="predict_fn.*does not depend on params"):
        flatmin.model_flatness(_loss, lambda p, b: b[1], PARAMS, BATCH, KEY, trace_probes=4)


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "4", None])
def test_counts_that_are_not_positive_integers_are_named(bad):
    def calls():
        yield "num_probes", lambda: flatmin.hessian_trace(_loss, PARAMS, BATCH, KEY, bad)
        yield "probe_batch_size", lambda: flatmin.hessian_trace(_loss, PARAMS, BATCH, KEY, 4, probe_batch_size=bad)
        yield "num_matvecs", lambda: flatmin.hessian_top_eigenvalue(_loss, PARAMS, BATCH, KEY, num_matvecs=bad)
        yield "trace_probes", lambda: flatmin.model_flatness(_loss, _predict, PARAMS, BATCH, KEY, trace_probes=bad)
        yield "num_matvecs", lambda: flatmin.model_flatness(_loss, _predict, PARAMS, BATCH, KEY, num_matvecs=bad)
        yield "probe_batch_size", lambda: flatmin.model_flatness(_loss, _predict, PARAMS, BATCH, KEY,
                                                                 probe_batch_size=bad)
    for name, call in calls():
        with pytest.raises(ValueError, match=rf"{name} must be an integer >= \d, got {bad!r}"):
            call()
