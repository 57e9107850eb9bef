"""flatmin: measure and find flat minima (Ahn, Jadbabaie, Sra, ICML 2024).

Importing flatmin leaves JAX's configuration as it is: arrays stay float32 unless the program turns on
JAX's 64-bit mode. The model API (``value_and_perturbed_grad``, ``hessian_trace``,
``hessian_top_eigenvalue``, ``model_flatness``) computes in the dtype of the parameters it is given. The
Problem layer (``Problem``, ``make_problem``, the flatness measures, ``simulate``/``run``, ``measure``)
needs float64 (third derivatives, projections on the minima, per-step decreases of order eps^3) and,
with the 64-bit mode off, raises an error naming the line that turns it on, to run once at the start of
the program::

    jax.config.update("jax_enable_x64", True)

(:mod:`flatmin._precision`; ``with jax.enable_x64(True):`` scopes it instead).
"""

from flatmin.problem import Problem, list_problems, make_problem, register_problem
from flatmin.flatness import (
    flatness,
    hutchinson_trace,
    is_flat,
    limit_map,
    normalized_trace,
    tangent_gradient,
    tangent_projector,
)
from flatmin.method import Cost, Method, Oracle, Param, Step, get_method, list_methods, register_method
from flatmin.algorithms import (
    AlreadyFlatWarning,
    DivergenceError,
    Trajectory,
    perturbation,
    run,
    simulate,
)
from flatmin.measurement import first_flat_queries, first_flat_step, measure
from flatmin.theory import theory_params
from flatmin.perturbed import PerturbedGradient, perturbed_gradient, value_and_perturbed_grad
from flatmin.curvature import TopEigenvalue, hessian_top_eigenvalue, hessian_trace
from flatmin.model_flatness import ModelFlatness, model_flatness

__all__ = [
    "AlreadyFlatWarning",
    "Cost",
    "DivergenceError",
    "Method",
    "ModelFlatness",
    "Oracle",
    "Param",
    "PerturbedGradient",
    "Problem",
    "Step",
    "TopEigenvalue",
    "Trajectory",
    "first_flat_queries",
    "first_flat_step",
    "flatness",
    "get_method",
    "hessian_top_eigenvalue",
    "hessian_trace",
    "hutchinson_trace",
    "is_flat",
    "limit_map",
    "list_methods",
    "list_problems",
    "make_problem",
    "measure",
    "model_flatness",
    "normalized_trace",
    "perturbation",
    "perturbed_gradient",
    "register_method",
    "register_problem",
    "run",
    "simulate",
    "tangent_gradient",
    "tangent_projector",
    "theory_params",
    "value_and_perturbed_grad",
]
__version__ = "0.1.0"
