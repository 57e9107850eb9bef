"""Configuration check and path helpers shared by the rule files; it defines no jobs itself.

The config (config/config.yaml; a complete --configfile such as config/quick.yaml instead of it; a
partial --configfile merged over it) is validated against
workflows/schema/config.schema.yaml before the DAG is built; an error names the key and the value.
"""

import copy
import os
from pathlib import Path

import jsonschema
import yaml

from flatmin.workflow import replace_problem_specs

SCHEMA_PATH = Path(workflow.basedir) / "workflows" / "schema" / "config.schema.yaml"
SIDECAR = ".provenance.json"
FIGURE_FORMATS = ["pdf", "png"]
TABLE_FILES = ["audit.md", "audit.csv", "table1.md", "table1.tex"]
#: Output folders only the paper profile may write (the committed figures and tables).
COMMITTED_OUTPUTS = {"figures": "figures", "tables": "tables"}
SCHEMA_DEFS = {}


def _key_path(path):
    return ".".join(str(part) for part in path) or "<top level>"


def _allowed_keys(schema):
    """The property names a (sub)schema declares, following local $ref and allOf."""
    keys = set(schema.get("properties", {}))
    ref = schema.get("$ref", "")
    if ref.startswith("#/$defs/"):
        keys |= _allowed_keys(SCHEMA_DEFS[ref.split("/")[-1]])
    for sub in schema.get("allOf", []):
        keys |= _allowed_keys(sub)
    return keys


def _describe(error):
    """Lines describing one schema violation: the key, the bad value and what is expected."""
    key = _key_path(error.absolute_path)
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        allowed = sorted(_allowed_keys(error.schema))
        prefix = f"{key}." if error.absolute_path else ""
        return [
            f"unknown key {prefix}{name} = {error.instance[name]!r} (allowed keys here: {', '.join(allowed)})"
            for name in sorted(set(error.instance) - set(allowed))
        ]
    if error.validator == "required":
        return [f"{key}: {error.message}"]
    if error.validator == "anyOf" and all(
        "required" in sub for sub in error.validator_value
    ):
        choices = " or ".join(sub["required"][0] for sub in error.validator_value)
        return [f"{key}: missing key, give {choices}"]
    expected = error.schema.get("description")
    if expected is None and error.parent is not None:
        expected = error.parent.schema.get("description")
    message = f"{key} = {error.instance!r}: {error.message}"
    return [
        message + (f" (expected: {' '.join(expected.split())})" if expected else "")
    ]


def check_config(config, schema_path=SCHEMA_PATH):
    """Validate ``config`` against the schema; raise ValueError listing every violation."""
    with open(schema_path, encoding="utf-8") as handle:
        schema = yaml.safe_load(handle)
    SCHEMA_DEFS.update(schema.get("$defs", {}))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(
        validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]
    )
    if errors:
        lines = [line for error in errors for line in _describe(error)]
        listing = "\n".join(f"  - {line}" for line in lines)
        raise ValueError(f"invalid flatmin config ({len(lines)} error(s)):\n{listing}")
    if config["profile"] != "paper":
        for key, committed in COMMITTED_OUTPUTS.items():
            target = os.path.normpath(config["output"][key])
            if target == committed:
                raise ValueError(
                    f"invalid flatmin config: output.{key} = {config['output'][key]!r} with profile "
                    f"{config['profile']!r}: only the paper profile may write the committed {committed}/ "
                    f"folder; choose e.g. build/{config['profile']}/{committed}"
                )
    return schema


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


with open(SCHEMA_PATH, encoding="utf-8") as _handle:
    use_complete_cli_config(config, yaml.safe_load(_handle)["required"])
SCHEMA = check_config(config)
EXPERIMENTS = list(SCHEMA["properties"]["experiments"]["properties"])
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
#: the users' environment.yml, which installs this checkout with its workflow extras.
CONDA_ENV = "../environment.yml"


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
