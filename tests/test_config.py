"""The workflow config check (:func:`flatmin.config.check_config`) and the experiments' typed settings:
both profiles resolve to the settings the figures were made with, a misspelt key anywhere is reported as
unknown with the allowed keys, a bad value is reported with its key, its value and what is allowed.

The end-to-end path (Snakemake refusing to start) is tested in tests/test_workflow.py (BAD_CONFIGS).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from flatmin import experiments
from flatmin.config import JOB_KEYS, ConfigError, check_config
from flatmin.settings import all_fields

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "config" / "config.yaml"
QUICK = ROOT / "config" / "quick.yaml"
EXPERIMENTS = experiments.experiment_names()


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def quick() -> dict:
    """The quick profile with every section resolved (all settings written out), as a config."""
    return check_config(load(QUICK))


def errors_of(config: dict) -> str:
    with pytest.raises(ConfigError, match="invalid flatmin config") as info:
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


def test_the_builtin_experiments_are_found_in_order():
    assert EXPERIMENTS == ["identities", "decrease", "complexity", "trajectories", "example1", "escape",
                           "generalization", "yardstick", "label_noise", "implicit_bias"]


@pytest.mark.parametrize("path", [PAPER, QUICK], ids=["paper", "quick"])
def test_a_profile_resolves_to_its_presets(path):
    config = load(path)
    resolved = check_config(config)
    for name in EXPERIMENTS:
        settings = {k: v for k, v in resolved["experiments"][name].items() if k not in JOB_KEYS}
        assert settings == experiments.settings(name, config["preset"])
    # A resolved config is a valid config and resolves to itself.
    assert check_config(resolved) == resolved


def test_the_quick_preset_changes_only_the_keys_it_names():
    for name in EXPERIMENTS:
        paper, quick = experiments.settings(name), experiments.settings(name, "quick")
        overrides = experiments.get(name).PRESETS["quick"]
        assert {k for k in paper if paper[k] != quick[k]} <= set(overrides), name


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_setting_has_a_description(name):
    """The config check prints a key's description when its value is bad: every key needs one."""
    for key, field in all_fields(experiments.get(name).Settings):
        assert field.description, f"experiments.{name}.{key} has no description"


def misspelt(key: str) -> str:
    """A plausible typo of ``key``: its last two characters swapped (or a letter doubled)."""
    typo = key[:-2] + key[-1] + key[-2] if len(key) > 2 else key + key[-1]
    return typo if typo != key else key + key[-1]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_a_misspelt_key_in_each_experiment_is_unknown(quick, name):
    config = copy.deepcopy(quick)
    section = config["experiments"][name]
    key = next(k for k in section if k not in JOB_KEYS)
    typo = misspelt(key)
    section[typo] = section.pop(key)
    output = errors_of(config)
    assert f"experiments.{name}: unknown key {typo} = {section[typo]!r}" in output, output
    allowed = output.split(f"unknown key {typo}")[1].splitlines()[0]
    assert f" {key}," in allowed or f" {key})" in allowed, allowed  # the right spelling is offered


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_job_keys_and_a_disabled_section(quick, name):
    config = copy.deepcopy(quick)
    config["experiments"][name].update(threads=4, mem_mb=4000, runtime=30)
    assert check_config(config)["experiments"][name]["mem_mb"] == 4000
    config["experiments"][name] = {"enabled": False}
    assert check_config(config)["experiments"][name]["enabled"] is False
    config["experiments"][name] = {"threads": 2}
    assert f"experiments.{name}.enabled: missing" in errors_of(config)


NESTED_TYPOS = {
    "problem spec": (("experiments", "identities", "rho_problem", "parms"), {"depth": 2},
                     "experiments.identities.rho_problem: unknown key parms = {'depth': 2} (allowed keys here: name, params)"),
    "eps_param where it is not used": (("experiments", "identities", "dim_problem", "eps_param"), "eps",
                                       "experiments.identities.dim_problem: unknown key eps_param = 'eps'"),
    "sweep instance": (("experiments", "complexity", "eps_sweep", "instances", 0, "lable"), "ramp",
                       "experiments.complexity.eps_sweep.instances.0: unknown key lable = 'ramp'"),
    "dim sweep": (("experiments", "decrease", "dim_sweep", "dim_parm"), "k",
                  "experiments.decrease.dim_sweep: unknown key dim_parm = 'k'"),
    "theory constant": (("experiments", "complexity", "constants", "rs", "ct"), 1.0,
                        "experiments.complexity.constants.rs: unknown key ct = 1.0"),
    "algorithm in an eps map": (("experiments", "decrease", "eps", "gd"), [0.01],
                                "experiments.decrease.eps.gd = 'gd': no theory schedule for 'gd'; allowed: rs, sa"),
    "escape run": (("experiments", "escape", "runs", 0, "rho"), [0.1],
                   "experiments.escape.runs.0: unknown key rho = [0.1] (allowed keys here: method, options, batch, knob, values, rhos)"),
    "top level": (("experiment",), {}, "<top level>: unknown key experiment = {}"),
    "unknown experiment": (("experiments", "identites"), {"enabled": True},
                           "experiments.identites: unknown experiment (known: identities, decrease"),
}


@pytest.mark.parametrize("case", list(NESTED_TYPOS))
def test_a_misspelt_nested_key_is_unknown(quick, case):
    path, value, expected = NESTED_TYPOS[case]
    output = errors_of(with_value(quick, path, value))
    assert expected in output, output


# case -> (path, bad value or None to remove the key, texts the error must contain)
BAD_VALUES = {
    # identities
    "draws below 2": (("experiments", "identities", "draws"), 1,
                      ["experiments.identities.draws = 1", "greater than or equal to 2", "an integer >= 2"]),
    "negative rho": (("experiments", "identities", "rhos"), [0.1, -0.2],
                     ["experiments.identities.rhos.1 = -0.2", "greater than 0"]),
    "empty rhos": (("experiments", "identities", "rhos"), [],
                   ["experiments.identities.rhos = []", "non-empty"]),
    "zero dim_rho": (("experiments", "identities", "dim_rho"), 0,
                     ["experiments.identities.dim_rho = 0", "a number > 0"]),
    "dimension 1": (("experiments", "identities", "dims"), [1, 4],
                    ["experiments.identities.dims.0 = 1", "greater than or equal to 2", "integers >= 2"]),
    "problem without name": (("experiments", "identities", "control_problem", "name"), None,
                             ["experiments.identities.control_problem.name: missing", "a problem name"]),
    "problem params not a mapping": (("experiments", "identities", "rho_problem", "params"), [2],
                                     ["experiments.identities.rho_problem.params = [2]", "dictionary"]),
    "negative seed": (("experiments", "identities", "seed"), -1,
                      ["experiments.identities.seed = -1", "an integer >= 0"]),
    "a boolean for an integer": (("experiments", "identities", "draws"), True,
                                 ["experiments.identities.draws = True", "valid integer"]),
    # decrease
    "negative eps": (("experiments", "decrease", "eps", "rs"), [-0.1],
                     ["experiments.decrease.eps.rs.0 = -0.1", "greater than 0"]),
    "eps not a list": (("experiments", "decrease", "eps", "sa"), 0.004,
                       ["experiments.decrease.eps.sa = 0.004", "valid list"]),
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
                                    ["experiments.decrease.problem.eps_param = 'the eps'", "keyword argument"]),
    # complexity
    "unknown algorithm": (("experiments", "complexity", "dim_sweep", "algorithms"), ["rs", "gdd"],
                          ["experiments.complexity.dim_sweep.algorithms.1 = 'gdd'", "no theory schedule for 'gdd'; allowed: rs, sa"]),
    "repeated algorithm": (("experiments", "complexity", "dim_sweep", "algorithms"), ["rs", "rs"],
                           ["experiments.complexity.dim_sweep.algorithms = ['rs', 'rs']", "distinct"]),
    "instance eps negative": (("experiments", "complexity", "eps_sweep", "instances", 0, "eps"), {"rs": [-0.1]},
                              ["experiments.complexity.eps_sweep.instances.0.eps.rs.0 = -0.1"]),
    "instance without label": (("experiments", "complexity", "eps_sweep", "instances", 0, "label"), None,
                               ["experiments.complexity.eps_sweep.instances.0.label: missing"]),
    "no instances": (("experiments", "complexity", "eps_sweep", "instances"), [],
                     ["experiments.complexity.eps_sweep.instances = []", "non-empty"]),
    "zero records": (("experiments", "complexity", "records"), 0,
                     ["experiments.complexity.records = 0", "an integer >= 1"]),
    "negative eps scalar": (("experiments", "complexity", "dim_sweep", "eps"), -0.02,
                            ["experiments.complexity.dim_sweep.eps = -0.02", "a number > 0"]),
    # trajectories, example1, generalization
    "unknown algorithm name": (("experiments", "trajectories", "instances", 0, "algorithms"), {"adam": {}},
                               ["experiments.trajectories.instances.0.algorithms.adam", "unknown method 'adam'; registered methods: anti_pgd, gd, label_noise_sgd, perturbed_gd, rs"]),
    "t_range not around 1": (("experiments", "example1", "t_range"), [2.0, 100.0],
                             ["experiments.example1.t_range = [2.0, 100.0]", "0 < t_min < 1 < t_max"]),
    "problem without a recovery error": (
        ("experiments", "generalization", "instances", 0, "problem"), {"name": "hyperbola", "params": {}},
        ["experiments.generalization.instances.0.problem", "diagonal_net, matrix_sensing"]),
    # escape
    "unknown method": (("experiments", "escape", "runs", 1, "method"), "adam",
                       ["experiments.escape.runs.1.method = 'adam'", "registered methods: anti_pgd, gd, label_noise_sgd, perturbed_gd, rs, rs_noproj, sa, sam, sam_per_sample, sgd"]),
    "negative escape rho": (("experiments", "escape", "runs", 2, "rhos"), [-0.5],
                            ["experiments.escape.runs.2.rhos.0 = -0.5", ">= 0"]),
    "unknown activation": (("experiments", "escape", "activation"), "sigmoid",
                           ["experiments.escape.activation = 'sigmoid'", "'tanh', 'relu', 'gelu' or 'softplus'"]),
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
    "eta as a string": (("experiments", "escape", "eta"), "fast",
                        ["experiments.escape.eta = 'fast'", "a number > 0"]),
    "batch above n_train": (("experiments", "escape", "n_train"), 100,
                            ["experiments.escape", "batch 128 of the sgd group exceeds n_train = 100"]),
    # job keys and the top level
    "negative seeds": (("experiments", "decrease", "seeds"), -3, ["experiments.decrease.seeds", "-3"]),
    "enabled not a boolean": (("experiments", "decrease", "enabled"), "yes",
                              ["experiments.decrease.enabled", "'yes'", "boolean"]),
    "threads zero": (("experiments", "escape", "threads"), 0, ["experiments.escape.threads = 0"]),
    "unknown top-level key": (("outputs",), {"figures": "x"}, ["unknown key outputs"]),
    "unknown preset": (("preset",), "fast", ["preset = 'fast': unknown preset (allowed: paper, quick)"]),
    "problem module not a .py file": (("problem_modules",), ["my_problem.txt"],
                                      ["problem_modules.0 = 'my_problem.txt'", "pattern"]),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_bad_value_is_rejected_naming_key_and_value(quick, case):
    path, value, expected = BAD_VALUES[case]
    output = errors_of(with_value(quick, path, value))
    for text in expected:
        assert text in output, (text, output)


def test_every_error_is_listed_at_once(quick):
    config = with_value(quick, ("experiments", "identities", "draws"), 1)
    config = with_value(config, ("experiments", "escape", "eta"), -1.0)
    output = errors_of(config)
    assert "(2 error(s))" in output and "identities.draws" in output and "escape.eta" in output, output


def test_a_section_key_replaces_the_setting_whole():
    config = load(QUICK)
    config["experiments"]["decrease"].update(seeds=[3, 5, 8], eps={"sa": [0.004]},
                                             dim_sweep={"dim_param": "k", "values": [7], "eps": {}})
    section = check_config(config)["experiments"]["decrease"]
    assert section["eps"] == {"sa": [0.004]}  # no RS list merged in from the preset
    assert section["seeds"] == [3, 5, 8] and section["window_fraction"] == 0.05


def test_a_good_variation_passes():
    """Values the experiments accept but the profiles do not use: a seed list, an instance with its own
    eps lists, a problem without params, trace_samples as a number, only one algorithm."""
    config = load(QUICK)
    instances = experiments.settings("complexity", "quick")["eps_sweep"]["instances"]
    config["experiments"]["complexity"].update(
        eps_sweep={"eps": {"rs": [0.02]}, "instances": [*instances, {"name": "hyperbola", "label": "hyperbola"}]},
        dim_sweep={"instance": instances[0], "dim_param": "k", "values": [3], "eps": 0.04, "algorithms": ["sa"]},
        shard_by="eps_sweep.instances",
    )
    config["experiments"]["identities"]["rho_problem"] = {"name": "hyperbola"}
    config["experiments"]["escape"].update(trace_samples=500, data="digits", activation="relu", loss="ce")
    resolved = check_config(config)["experiments"]
    assert resolved["identities"]["rho_problem"] == {"name": "hyperbola"}
    assert resolved["complexity"]["shard_by"] == "eps_sweep.instances"


def test_only_the_paper_profile_writes_the_committed_folders():
    config = load(QUICK)
    config["output"]["figures"] = "figures"
    assert "only the paper profile may write the committed figures/ folder" in errors_of(config)


# Problem specs and problem_modules: checked before any job, against the registered problems and the
# parameters of each problem's factory.
PROBLEM_ERRORS = {
    "unknown problem": (("experiments", "identities", "rho_problem"), {"name": "hyperbolaa", "params": {}},
                        ["experiments.identities.rho_problem.name = 'hyperbolaa': unknown problem",
                         "registered: diagonal_net, factorization, hyperbola,", "problem_modules"]),
    "unknown problem in a list": (("experiments", "trajectories", "instances", 0, "problem", "name"), "diag_net",
                                  ["experiments.trajectories.instances.0.problem.name = 'diag_net': unknown problem"]),
    "misspelt parameter": (("experiments", "identities", "rho_problem", "params"), {"deptth": 3},
                           ["experiments.identities.rho_problem.params: unknown parameter deptth = 3 of problem "
                            "'hyperbola' (its parameters: depth"]),
    "misspelt eps_param": (("experiments", "decrease", "problem", "eps_param"), "epsilon",
                           ["experiments.decrease.problem.eps_param = 'epsilon': not a parameter of problem "
                            "'valley_ramp' (its parameters: eps,"]),
}


@pytest.mark.parametrize("case", list(PROBLEM_ERRORS))
def test_a_bad_problem_spec_is_refused_naming_key_value_and_allowed(quick, case):
    path, value, expected = PROBLEM_ERRORS[case]
    message = errors_of(with_value(quick, path, value))
    assert "(1 error(s))" in message, message
    for text in expected:
        assert text in message, (text, message)


def test_problem_modules_are_imported_by_the_check(quick, tmp_path):
    (tmp_path / "mine.py").write_text(
        "import flatmin\n\n\n@flatmin.register_problem('check_bowl')\ndef check_bowl(scale=1.0):\n"
        "    return flatmin.Problem('check_bowl', 2, lambda x: scale * (x ** 2).sum())\n")
    (tmp_path / "broken.py").write_text("raise RuntimeError('no data folder')\n")
    config = with_value(with_value(quick, ("experiments", "example1", "problem"),
                                   {"name": "check_bowl", "params": {"scale": 2.0}}), ("problem_modules",), ["mine.py"])
    assert check_config(config, base=tmp_path)["experiments"]["example1"]["problem"]["name"] == "check_bowl"
    config["experiments"]["example1"]["problem"]["params"] = {"scael": 2.0}
    config["problem_modules"] = ["mine.py", "missing.py", "broken.py"]
    with pytest.raises(ConfigError) as info:
        check_config(config, base=tmp_path)
    message = str(info.value)
    assert f"problem_modules.1 = 'missing.py': file not found (looked for {tmp_path / 'missing.py'})" in message
    assert "problem_modules.2 = 'broken.py': importing it failed: RuntimeError: no data folder" in message
    assert ("experiments.example1.problem.params: unknown parameter scael = 2.0 of problem 'check_bowl' "
            "(its parameters: scale)") in message
