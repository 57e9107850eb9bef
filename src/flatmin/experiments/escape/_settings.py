"""The escape's settings: the data, the model, the two minimizers' construction, the run groups and the
figure's panels, with the paper profile's values as defaults, and the quick preset."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

import flatmin.settings
from flatmin.experiments.escape._runs import group_grid
from flatmin.method import get_method
from flatmin.settings import Count, MethodName, Spec, StepParams

Loss = Literal["mse", "ce"]
# SA as the paper's escape experiment runs it: perturbation and projection on the mini-batch gradient, the
# gate open, and no Remark 2 fallback (whose extra gradient vmap would evaluate at every step).
_SA_OPTIONS = {"projection": "batch", "fallback": False}


#: The knobs a run group's grid may run over (:func:`flatmin.training.main_knob`): the radius of RS, SA,
#: SAM and 1-SAM, the label-noise scale of label-noise SGD.
KNOBS = ("rho", "sigma")
_Values = list[Annotated[float, Field(ge=0, allow_inf_nan=False)]]


class RunGroup(Spec):
    method: MethodName = Field(description="the method of the group, a registered method without state "
                               "(flatmin.list_methods())")
    options: StepParams = Field({}, description=(
        "the method's parameters other than its knob (flatmin.get_method(method).params), e.g. SA's "
        "{projection: batch, fallback: false}"))
    batch: Count = Field(ge=1, description="mini-batch size of the group, an integer in [1, n_train]")
    knob: Literal["rho", "sigma"] | None = Field(None, description=(
        "the method's parameter the grid runs over: rho (RS, SA, SAM, 1-SAM) or sigma (label-noise SGD); "
        "default the method's own (none for SGD)"))
    values: _Values | None = Field(None, min_length=1, description=(
        "the grid of the knob, a non-empty list of finite numbers >= 0 (0 is SGD); or give rhos"))
    rhos: _Values | None = Field(None, min_length=1, description=(
        "the rho grid (the same as knob: rho, values: [...]), a non-empty list of finite numbers >= 0 (0 is SGD)"))

    @model_validator(mode="after")
    def _one_grid(self):
        if (self.values is None) == (self.rhos is None):
            raise ValueError(f"the {self.method} group needs its grid once: values (with knob) or rhos, "
                             f"got values = {self.values!r}, rhos = {self.rhos!r}")
        knob, values = group_grid(self.model_dump())
        if self.rhos is not None and knob not in (None, "rho"):
            raise ValueError(f"the {self.method} group: rhos is the rho grid, not that of knob = {knob!r}; "
                             "give knob and values instead")
        if knob is None and any(v != 0 for v in values):
            raise ValueError(f"the {self.method} group: method {self.method!r} has no knob (rho or sigma), so its "
                             f"values must be [0], got {values!r}")
        params = get_method(self.method).params
        if self.knob is not None and self.knob not in params:
            allowed = [k for k in KNOBS if k in params]
            raise ValueError(f"the {self.method} group: knob = {self.knob!r} is not a parameter of method "
                             f"{self.method!r}; allowed: {', '.join(allowed) or 'none (leave knob out)'}")
        if knob is not None:
            for v in values:
                params[knob].check(f"the {self.method} group", knob, v)
        return self


class Settings(flatmin.settings.Settings):
    """Every knob of the experiment; the defaults are the paper profile (CPU scale)."""

    # data / model
    data: Literal["mnist1d", "digits"] = Field("digits", description=(
        "the data set, mnist1d (generated offline) or digits (scikit-learn, n_train + n_test <= 1797)"))
    n_train: Count = Field(500, ge=1, description="size of the training split, an integer >= 1")
    n_test: Count = Field(1297, ge=1, description="size of the test split, an integer >= 1")
    data_seed: Count = Field(0, ge=0, description=(
        "seed of the MNIST-1D generator, the split and the confusion set, an integer >= 0"))
    width: Count = Field(64, ge=1, description="width of each hidden layer of the MLP, an integer >= 1")
    depth: Count = Field(2, ge=1, description="number of hidden layers of the MLP, an integer >= 1")
    activation: Literal["tanh", "relu", "gelu", "softplus"] = Field("tanh", description=(
        "activation of the MLP, one of tanh (smooth, the default), relu, gelu, softplus"))
    loss: Loss = Field("mse", description=(
        "training loss of the clean phase and of the escape, mse (half squared error to one-hot) or ce"))
    init_seed: Count = Field(0, ge=0, description=(
        "seed of the initialization (and of the pre-training and clean SGD), an integer >= 0"))
    init_scale: float = Field(1.0, gt=0, description="scale of the LeCun normal initialization, a number > 0")
    # bad minimizer: the confusion pre-training (plain SGD, a fixed number of epochs)
    confusion_repeats: Count = Field(20, ge=1, description="copies of the training inputs in the confusion set, an integer >= 1")
    confusion_zero_frac: float = Field(0.1, ge=0, lt=1, description=(
        "fraction of the confusion set's input entries zeroed, a number in [0, 1)"))
    confusion_loss: Loss = Field("ce", description="loss of the confusion pre-training, ce or mse")
    confusion_epochs: Count = Field(150, ge=0, description="epochs of the confusion pre-training, an integer >= 0")
    confusion_lr: float = Field(0.05, gt=0, description="step size of the confusion pre-training, a number > 0")
    confusion_batch: Count = Field(32, ge=1, description="batch size of the confusion pre-training, an integer >= 1")
    # clean training: the bad minimizer from the pre-trained point, the normal one from the initialization
    clean_lr: float = Field(0.05, gt=0, description="step size of the clean training (both minimizers), a number > 0")
    clean_batch: Count = Field(32, ge=1, description="batch size of the clean training, an integer >= 1")
    clean_max_epochs: Count = Field(2000, ge=1, description=(
        "epochs after which the clean training gives up reaching 100% training accuracy, an integer >= 1"))
    clean_extra_epochs: Count = Field(500, ge=0, description=(
        "epochs of clean training after 100% training accuracy is reached (to get close to an interpolating "
        "minimum), an integer >= 0"))
    # escape
    eta: float = Field(0.002, gt=0, description="the constant step size of every method in the escape, a number > 0")
    steps: Count = Field(10000, ge=1, description="steps of every escape run, an integer >= 1")
    num_checkpoints: Count = Field(10, ge=1, description="equally spaced checkpoints of each run (plus step 0), an integer >= 1")
    seeds: Count = Field(5, ge=1, description="number of seeds n of every run (seeds 0..n-1), an integer >= 1")
    runs: list[RunGroup] = Field(
        [{"method": "sgd", "batch": 128, "rhos": [0.0]},
         {"method": "rs", "batch": 128, "rhos": [0.4, 2.0, 8.0]},
         {"method": "sa", "batch": 128, "rhos": [0.2, 0.4, 0.6], "options": _SA_OPTIONS},
         {"method": "sa", "batch": 64, "rhos": [0.2], "options": _SA_OPTIONS},
         {"method": "sa", "batch": 16, "rhos": [0.2], "options": _SA_OPTIONS},
         {"method": "sa", "batch": 1, "rhos": [0.2], "options": _SA_OPTIONS},
         {"method": "label_noise_sgd", "batch": 128, "knob": "sigma", "values": [0.5, 2.0, 8.0]},
         {"method": "sam_per_sample", "batch": 1, "knob": "rho", "values": [0.2, 0.3, 0.4]}],
        min_length=1, description=(
            "the escape runs, a non-empty list of {method, options, batch: B, knob: rho|sigma, values: [...]} "
            "(or rhos: [...] for a rho grid; the grids of the paper profile: docs/escape_notes.md)"))
    trace_probes: Count = Field(20, ge=2, description=(
        "Hutchinson probes per trace measurement (the same at every checkpoint: common random numbers), an "
        "integer >= 2 (the standard error needs two)"))
    trace_samples: Count | None = Field(None, ge=1, description=(
        "training samples in the loss whose trace is estimated, an integer >= 1 or null (all)"))
    # Definition 3 at the minimizers and the end points (flatmin.model_flatness on the whole training loss)
    flatness_seeds: Count = Field(1, ge=0, description=(
        "end points measured per run (seeds 0..flatness_seeds-1; 0 for the two minimizers only), an integer "
        ">= 0 and <= seeds"))
    flatness_probes: Count = Field(100, ge=2, description=(
        "Rademacher probes of the trace gradient at each measured point, an integer >= 2"))
    flatness_runs: Literal["best", "all"] = Field("best", description=(
        "the runs whose end points are measured: best (per method, the rho with the highest mean final test "
        "accuracy at panel_batch, and the best run over every batch) or all (every run)"))
    # figure
    control: MethodName = Field("sgd", description="the control method, drawn dashed in every panel")
    panel_a: dict[MethodName, list[Annotated[float, Field(ge=0)]]] = Field(
        {"rs": [0.4, 8.0], "sa": [0.4, 0.6]}, description=(
            "the curves of panel (a), {method: [value, ...]} (among the runs' methods and their knobs' values)"))
    panel_batch: Count = Field(128, ge=1, description="batch size of panels (a) and (b), an integer >= 1 (one of the runs' batches)")
    batch_method: MethodName = Field("sa", description="the method of panel (c), drawn at every batch size it ran")
    batch_rho: float = Field(0.2, ge=0, description="rho of panel (c), a number >= 0")

    @model_validator(mode="after")
    def _consistent(self):
        seen = set()
        for group in self.runs:
            knob, values = group_grid(group.model_dump())
            for value in values:
                if (group.method, group.batch, value) in seen:  # the tables key runs on these three
                    raise ValueError(f"runs: {group.method} at batch {group.batch} and {knob or 'value'} {value:g} "
                                     "appears twice")
                seen.add((group.method, group.batch, value))
            if group.batch > self.n_train:
                raise ValueError(f"runs: batch {group.batch} of the {group.method} group exceeds n_train = {self.n_train}")
        if self.flatness_seeds > self.seeds:
            raise ValueError(f"flatness_seeds = {self.flatness_seeds} exceeds seeds = {self.seeds}")
        return self


#: "quick" keeps the minimizers of the paper profile (same data, model and construction) and shortens
#: the escape runs.
PRESETS = {
    "quick": {
        "steps": 2500,
        "num_checkpoints": 5,
        "seeds": 2,
        "trace_probes": 10,
        "flatness_seeds": 0,
        "runs": [
            {"method": "sgd", "batch": 128, "rhos": [0.0]},
            {"method": "rs", "batch": 128, "rhos": [0.4, 4.0]},
            {"method": "sa", "batch": 128, "rhos": [0.4], "options": _SA_OPTIONS},
            {"method": "sa", "batch": 64, "rhos": [0.2], "options": _SA_OPTIONS},
            {"method": "sa", "batch": 1, "rhos": [0.2], "options": _SA_OPTIONS},
            {"method": "label_noise_sgd", "batch": 128, "knob": "sigma", "values": [2.0]},
            {"method": "sam_per_sample", "batch": 1, "knob": "rho", "values": [0.2]},
        ],
    },
}
