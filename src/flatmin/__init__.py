"""flatmin: measure and find flat minima (Ahn, Jadbabaie, Sra, ICML 2024).

Importing flatmin switches JAX to float64: every quantity here (third derivatives, projections,
per-step decreases of order eps^3) needs it.
"""

import jax

jax.config.update("jax_enable_x64", True)

from flatmin.problem import Problem, list_problems, make_problem, register_problem  # noqa: E402
from flatmin.flatness import (  # noqa: E402
    flatness,
    hutchinson_trace,
    is_flat,
    limit_map,
    normalized_trace,
    tangent_gradient,
    tangent_projector,
)
from flatmin.method import Cost, Method, Oracle, Param, Step, get_method, list_methods, register_method  # noqa: E402
from flatmin.algorithms import (  # noqa: E402
    AlreadyFlatWarning,
    DivergenceError,
    Trajectory,
    perturbation,
    run,
    simulate,
)
from flatmin.measurement import first_flat_step, measure  # noqa: E402
from flatmin.theory import theory_params  # noqa: E402
from flatmin.perturbed import PerturbedGradient, perturbed_gradient, value_and_perturbed_grad  # noqa: E402
from flatmin.curvature import TopEigenvalue, hessian_top_eigenvalue, hessian_trace  # noqa: E402
from flatmin.model_flatness import ModelFlatness, model_flatness  # noqa: E402

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
