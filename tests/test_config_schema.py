"""The per-experiment config schema (workflows/schema/config.schema.yaml) through the workflow's own
config check (``check_config`` of workflows/common.smk), in process: both profiles pass, a misspelt key
in any experiment section is reported as unknown, a bad value is reported with its key and value.

The end-to-end path (Snakemake refusing to start) is tested in tests/test_workflow.py (BAD_CONFIGS).
"""

from __future__ import annotations

import copy
import importlib
import types
from pathlib import Path

import pytest
import yaml

from flatmin.experiments import EXPERIMENTS

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "config" / "config.yaml"
QUICK = ROOT / "config" / "quick.yaml"
SCHEMA = ROOT / "workflows" / "schema" / "config.schema.yaml"
WORKFLOW_KEYS = ("enabled", "threads", "mem_mb", "runtime", "shard_by")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def check_config():
    """``check_config`` of workflows/common.smk, run as Snakemake would run the file (its globals
    ``workflow`` and ``config`` stood in for; config/quick.yaml as the workflow's config)."""
    namespace = {
        "workflow": types.SimpleNamespace(basedir=str(ROOT), config_settings=types.SimpleNamespace(overwrite_config=None)),
        "config": load(QUICK),
        "__name__": "common_smk",
    }
    source = (ROOT / "workflows" / "common.smk").read_text(encoding="utf-8")
    exec(compile(source, "workflows/common.smk", "exec"), namespace)
    return namespace["check_config"]


def schema_def(name: str) -> dict:
    return load(SCHEMA)["$defs"][name]


def closed(name: str) -> bool:
    """Whether experiment ``name``'s keys are all listed in the schema (unknown keys rejected)."""
    return schema_def(name).get("unevaluatedProperties") is False


def errors_of(check_config, config: dict) -> str:
    with pytest.raises(ValueError, match="invalid flatmin config") as info:
        check_config(config)
    return str(info.value)


def with_value(config: dict, path: tuple, value) -> dict:
    """``config`` with the entry at ``path`` (keys and list indices) set to ``value`` (None: removed)."""
    config = copy.deepcopy(config)
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    if value is None:
        parent.pop(path[-1])
    else:
        parent[path[-1]] = value
    return config


@pytest.mark.parametrize("path", [PAPER, QUICK], ids=["paper", "quick"])
def test_both_profiles_pass_the_config_check(check_config, path):
    check_config(load(path))


def test_every_key_of_every_experiment_has_a_description():
    """The config check prints a key's description when its value is bad: every listed key needs one."""
    schema = load(SCHEMA)

    def walk(node, where):
        if isinstance(node, dict):
            for key, sub in node.get("properties", {}).items():
                assert "description" in sub or set(sub) == {"$ref"}, f"{where}.{key} has no description"
            for key, sub in node.items():
                if key != "if":  # the enabled test of a section, not a key
                    walk(sub, f"{where}.{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{where}[{i}]")

    walk(schema, "schema")
    for name in EXPERIMENTS:
        assert schema["$defs"][name].get("description"), name


def misspelt(key: str) -> str:
    """A plausible typo of ``key``: its last two characters swapped (or a letter doubled)."""
    typo = key[:-2] + key[-1] + key[-2] if len(key) > 2 else key + key[-1]
    return typo if typo != key else key + key[-1]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_a_misspelt_key_in_each_experiment_is_unknown(check_config, name):
    if not closed(name):
        pytest.skip(f"the keys of experiments.{name} are not listed in the schema yet")
    config = load(QUICK)
    section = config["experiments"][name]
    key = next(k for k in section if k not in WORKFLOW_KEYS)
    typo = misspelt(key)
    section[typo] = section.pop(key)
    output = errors_of(check_config, config)
    assert f"unknown key experiments.{name}.{typo} = {section[typo]!r}" in output, output
    allowed = output.split(f"unknown key experiments.{name}.{typo}")[1].splitlines()[0]
    assert f" {key}," in allowed or f" {key})" in allowed, allowed  # the right spelling is offered
    assert f"experiments.{name}: '{key}' is a required property" in output, output


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_workflow_keys_stay_valid_and_a_disabled_section_needs_nothing_else(check_config, name):
    config = load(QUICK)
    config["experiments"][name].update(threads=4, mem_mb=4000, runtime=30)
    check_config(config)
    if closed(name):
        config["experiments"][name] = {"enabled": False}
        check_config(config)


NESTED_TYPOS = {
    "problem spec": (("experiments", "identities", "rho_problem", "parms"), {"depth": 2},
                     "unknown key experiments.identities.rho_problem.parms = {'depth': 2}"),
    "eps_param where it is not used": (("experiments", "identities", "dim_problem", "eps_param"), "eps",
                                       "unknown key experiments.identities.dim_problem.eps_param = 'eps'"),
    "sweep instance": (("experiments", "complexity", "eps_sweep", "instances", 0, "lable"), "ramp",
                       "unknown key experiments.complexity.eps_sweep.instances.0.lable = 'ramp'"),
    "dim sweep": (("experiments", "decrease", "dim_sweep", "dim_parm"), "k",
                  "unknown key experiments.decrease.dim_sweep.dim_parm = 'k'"),
    "theory constant": (("experiments", "complexity", "constants", "rs", "ct"), 1.0,
                        "unknown key experiments.complexity.constants.rs.ct = 1.0"),
    "algorithm in an eps map": (("experiments", "decrease", "eps", "gd"), [0.01],
                                "unknown key experiments.decrease.eps.gd = [0.01] (allowed keys here: rs, sa)"),
    "escape run": (("experiments", "escape", "runs", 0, "rho"), [0.1],
                   "unknown key experiments.escape.runs.0.rho = [0.1]"),
}


@pytest.mark.parametrize("case", list(NESTED_TYPOS))
def test_a_misspelt_nested_key_is_unknown(check_config, case):
    path, value, expected = NESTED_TYPOS[case]
    output = errors_of(check_config, with_value(load(QUICK), path, value))
    assert expected in output, output


# case -> (path, bad value or None to remove the key, texts the error must contain)
BAD_VALUES = {
    # identities
    "draws below 2": (("experiments", "identities", "draws"), 1,
                      ["experiments.identities.draws = 1", ">= 2"]),
    "negative rho": (("experiments", "identities", "rhos"), [0.1, -0.2],
                     ["experiments.identities.rhos.1 = -0.2", "a number > 0"]),
    "empty rhos": (("experiments", "identities", "rhos"), [],
                   ["experiments.identities.rhos = []", "non-empty"]),
    "zero dim_rho": (("experiments", "identities", "dim_rho"), 0,
                     ["experiments.identities.dim_rho = 0", "a number > 0"]),
    "dimension 1": (("experiments", "identities", "dims"), [1, 4],
                    ["experiments.identities.dims.0 = 1", "an integer >= 2"]),
    "problem without name": (("experiments", "identities", "control_problem", "name"), None,
                             ["experiments.identities.control_problem: 'name' is a required property"]),
    "problem params not a mapping": (("experiments", "identities", "rho_problem", "params"), [2],
                                     ["experiments.identities.rho_problem.params = [2]", "object"]),
    "negative seed": (("experiments", "identities", "seed"), -1,
                      ["experiments.identities.seed = -1", "an integer >= 0"]),
    "missing required key": (("experiments", "identities", "draws"), None,
                             ["experiments.identities: 'draws' is a required property"]),
    # decrease
    "negative eps": (("experiments", "decrease", "eps", "rs"), [-0.1],
                     ["experiments.decrease.eps.rs.0 = -0.1", "a number > 0"]),
    "eps not a list": (("experiments", "decrease", "eps", "sa"), 0.004,
                       ["experiments.decrease.eps.sa = 0.004", "array"]),
    "zero seeds": (("experiments", "decrease", "seeds"), 0,
                   ["experiments.decrease.seeds = 0", "an integer n >= 1"]),
    "repeated seeds": (("experiments", "decrease", "seeds"), [1, 1],
                       ["experiments.decrease.seeds = [1, 1]", "distinct"]),
    "window fraction above 1": (("experiments", "decrease", "window_fraction"), 1.5,
                                ["experiments.decrease.window_fraction = 1.5", "(0, 1]"]),
    "negative constant": (("experiments", "decrease", "constants", "rs"), {"cT": -1.0},
                          ["experiments.decrease.constants.rs.cT = -1.0", "a number > 0"]),
    "dim sweep eps zero": (("experiments", "decrease", "dim_sweep", "eps", "sa"), 0.0,
                           ["experiments.decrease.dim_sweep.eps.sa = 0.0", "a number > 0"]),
    "eps_param not an identifier": (("experiments", "decrease", "problem", "eps_param"), "the eps",
                                    ["experiments.decrease.problem.eps_param = 'the eps'"]),
    # complexity
    "unknown algorithm": (("experiments", "complexity", "dim_sweep", "algorithms"), ["rs", "gdd"],
                          ["experiments.complexity.dim_sweep.algorithms.1 = 'gdd'", "rs or sa"]),
    "algorithm without a theory schedule": (("experiments", "complexity", "dim_sweep", "algorithms"), ["sgd"],
                                            ["experiments.complexity.dim_sweep.algorithms.0 = 'sgd'"]),
    "instance eps negative": (("experiments", "complexity", "eps_sweep", "instances", 0, "eps"), {"rs": [-0.1]},
                              ["experiments.complexity.eps_sweep.instances.0.eps.rs.0 = -0.1"]),
    "instance without label": (("experiments", "complexity", "eps_sweep", "instances", 0, "label"), None,
                               ["experiments.complexity.eps_sweep.instances.0: 'label' is a required property"]),
    "no instances": (("experiments", "complexity", "eps_sweep", "instances"), [],
                     ["experiments.complexity.eps_sweep.instances = []", "non-empty"]),
    "zero records": (("experiments", "complexity", "records"), 0,
                     ["experiments.complexity.records = 0", "an integer >= 1"]),
    "negative eps scalar": (("experiments", "complexity", "dim_sweep", "eps"), -0.02,
                            ["experiments.complexity.dim_sweep.eps = -0.02", "a number > 0"]),
    # escape
    "unknown method": (("experiments", "escape", "runs", 1, "method"), "sam",
                       ["experiments.escape.runs.1.method = 'sam'", "sgd, rs, sa"]),
    "negative escape rho": (("experiments", "escape", "runs", 2, "rhos"), [-0.5],
                            ["experiments.escape.runs.2.rhos.0 = -0.5", ">= 0"]),
    "unknown activation": (("experiments", "escape", "activation"), "sigmoid",
                           ["experiments.escape.activation = 'sigmoid'", "tanh, relu, gelu, softplus"]),
    "unknown data set": (("experiments", "escape", "data"), "mnist",
                         ["experiments.escape.data = 'mnist'", "mnist1d"]),
    "escape seeds as a list": (("experiments", "escape", "seeds"), [0, 1],
                               ["experiments.escape.seeds = [0, 1]", "integer"]),
    "one trace probe": (("experiments", "escape", "trace_probes"), 1,
                        ["experiments.escape.trace_probes = 1", ">= 2"]),
    "zero trace samples": (("experiments", "escape", "trace_samples"), 0,
                           ["experiments.escape.trace_samples = 0", "or null"]),
    "zero_frac of 1": (("experiments", "escape", "confusion_zero_frac"), 1.0,
                       ["experiments.escape.confusion_zero_frac = 1.0", "[0, 1)"]),
    "eta as a string": (("experiments", "escape", "eta"), "1e-3",
                        ["experiments.escape.eta = '1e-3'", "a number > 0"]),
    "missing escape key": (("experiments", "escape", "flatness_probes"), None,
                           ["experiments.escape: 'flatness_probes' is a required property"]),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_bad_value_is_rejected_naming_key_and_value(check_config, case):
    path, value, expected = BAD_VALUES[case]
    output = errors_of(check_config, with_value(load(QUICK), path, value))
    for text in expected:
        assert text in output, (text, output)


def test_a_good_variation_passes(check_config):
    """Values the experiments accept but the profiles do not use: a seed list, an instance with its own
    eps lists, a problem without params, trace_samples as a number, only one algorithm."""
    config = load(QUICK)
    config["experiments"]["decrease"].update(seeds=[3, 5, 8], eps={"sa": [0.004]},
                                             dim_sweep={"dim_param": "k", "values": [7], "eps": {}})
    complexity = config["experiments"]["complexity"]
    complexity["eps_sweep"]["instances"].append({"name": "hyperbola", "label": "hyperbola", "eps": {"rs": [0.02]}})
    complexity["dim_sweep"]["algorithms"] = ["sa"]
    complexity["shard_by"] = "eps_sweep.instances"
    config["experiments"]["identities"]["rho_problem"] = {"name": "hyperbola"}
    config["experiments"]["escape"].update(trace_samples=500, data="digits", activation="relu", loss="ce")
    check_config(config)


@pytest.mark.parametrize("profile", ["paper", "quick"])
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_the_module_presets_satisfy_the_schema(check_config, name, profile):
    """An experiment module's own presets (PAPER_CONFIG / QUICK_CONFIG or make_config) pass the schema,
    so a key added to a module without the schema fails here, not in a user's run."""
    try:
        module = importlib.import_module(f"flatmin.experiments.{name}")
    except ModuleNotFoundError:
        pytest.skip(f"flatmin.experiments.{name} not written yet")
    from flatmin import workflow

    preset = workflow.module_preset(module, profile)
    if preset is None:
        pytest.skip(f"flatmin.experiments.{name} ships no {profile} preset")
    config = load(QUICK)
    config["experiments"][name] = {"enabled": True, **yaml.safe_load(yaml.safe_dump(preset))}
    check_config(config)
