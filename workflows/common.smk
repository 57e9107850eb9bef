"""Configuration check and path helpers shared by the rule files; it defines no jobs itself.

The config (config/config.yaml; a complete --configfile such as config/quick.yaml instead of it; a
partial --configfile merged over it) is checked and resolved by flatmin.config.check_config before the
DAG is built: every experiment section is completed from the experiment's typed Settings (paper values,
then the config's preset, then the section's own keys); an error names the key, the value and what is
allowed.
"""

import copy

from flatmin import experiments
from flatmin.config import REQUIRED_KEYS, check_config
from flatmin.workflow import replace_problem_specs

SIDECAR = ".provenance.json"
FIGURE_FORMATS = ["pdf", "png"]
TABLE_FILES = [
    "audit.md",
    "audit.csv",
    "table1.md",
    "table1.tex",
    "ranking.md",
    "summary.html",
]


def use_complete_cli_config(config, required):
    """A --configfile that has every required top-level key is a complete profile: it replaces
    config/config.yaml instead of being merged over it (Snakemake's default would let keys that only
    the paper config has leak into e.g. the quick profile). A partial --configfile is an overlay,
    merged key by key except problem specs ({name, params}), which it replaces whole.
    """
    cli = workflow.config_settings.overwrite_config
    if cli and all(key in cli for key in required):
        config.clear()
        config.update(copy.deepcopy(cli))
    elif cli:
        replace_problem_specs(config, cli)


use_complete_cli_config(config, REQUIRED_KEYS)
_resolved = check_config(config)
config.clear()
config.update(_resolved)
EXPERIMENTS = experiments.experiment_names()
ENABLED = [
    name
    for name in EXPERIMENTS
    if config["experiments"].get(name, {}).get("enabled", False)
]
PROFILE = config["profile"]
RESULTS = f"{config['output']['results']}/{PROFILE}"
FIGURES = config["output"]["figures"]
TABLES = config["output"]["tables"]
LOGS = f"{config['output']['logs']}/{PROFILE}"

#: Software environment of every job for --sw-deployment-method conda (relative to workflows/*.smk):
#: the users' environment.yml, the exact versions of requirements.lock; the jobs' scripts import this
#: checkout's flatmin from src/.
CONDA_ENV = "../environment.yml"


def experiment_caption(name):
    """The report caption of experiment ``name``'s figure: its module's ``caption(settings)`` of this
    profile's settings, or its ``CAPTION``."""
    experiment = experiments.get(name)
    if hasattr(experiment, "caption"):
        return experiment.caption(section(name))
    return experiment.CAPTION


def section(name):
    """The config section of experiment ``name`` (a missing section is a disabled experiment)."""
    return config["experiments"].get(name, {"enabled": False})


def sidecar(path):
    """The provenance sidecar of an output file."""
    return f"{path}{SIDECAR}"


def result(name):
    """The raw results table of experiment ``name``."""
    return f"{RESULTS}/{name}.csv"


def figure(name, fmt):
    """Experiment ``name``'s figure in format ``fmt`` (pdf or png)."""
    return f"{FIGURES}/{name}.{fmt}"


def table(filename):
    return f"{TABLES}/{filename}"


def log_file(job):
    return f"{LOGS}/{job}.log"


def _shard_list(name):
    """The list that ``shard_by`` names in experiment ``name``'s section (a dotted path for a nested key)."""
    path = section(name)["shard_by"]
    value = section(name)
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, list) or not value:
        raise ValueError(
            f"invalid flatmin config: experiments.{name}.shard_by = {path!r} but "
            f"experiments.{name}.{path} = {value!r} is not a non-empty list"
        )
    return path, value


def shard_names(name):
    """``[]`` for an unsharded experiment, else ``["00", "01", ...]`` (one per ``shard_by`` entry)."""
    if section(name).get("shard_by") is None:
        return []
    return [f"{i:02d}" for i in range(len(_shard_list(name)[1]))]


def shard_section(name, shard):
    """Shard ``shard`` of experiment ``name``: its section with the ``shard_by`` list cut to one entry."""
    path, values = _shard_list(name)
    result = copy.deepcopy(section(name))
    parent = result
    *parents, last = path.split(".")
    for part in parents:
        parent = parent[part]
    parent[last] = [values[int(shard)]]
    return result


def shard_results(name):
    """The shard tables merged into experiment ``name``'s table (empty when unsharded)."""
    return [f"{RESULTS}/shards/{name}/{shard}.csv" for shard in shard_names(name)]


def job_threads(name):
    """Threads of a compute job (1 for the merge of a sharded experiment)."""
    return 1 if shard_names(name) else section(name).get("threads", 1)


def job_mem_mb(name):
    return section(name).get("mem_mb", 2000)


def job_runtime(name):
    """Expected wall time of a compute job in minutes: the cluster time limit, and the priority of
    the job (longer jobs start first, so the parallel jobs finish together)."""
    return section(name).get("runtime", 60)
