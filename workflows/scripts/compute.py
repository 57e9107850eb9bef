"""Snakemake job: one experiment's results table (or one shard of it, or the merge of its shards).

Wires Snakemake's params/output/log to flatmin.workflow; all logic lives in the library.
"""

import sys
from pathlib import Path

smk = snakemake  # noqa: F821 (injected by Snakemake's script directive)
sys.path.insert(0, str(Path(smk.scriptdir).parents[1] / "src"))  # this checkout's flatmin

from flatmin.workflow import compute_to_csv, merge_shards, prepare, tee_output  # noqa: E402

name = smk.params.experiment
with tee_output(smk.log[0]):
    shards = list(getattr(smk.input, "shards", []))
    if shards:
        merge_shards(name, smk.params.section, shards, smk.output.csv, smk.config)
    else:
        prepare(smk.config, threads=smk.threads)
        shard = getattr(smk.wildcards, "shard", None)
        compute_to_csv(name, smk.params.section, smk.output.csv, smk.config, shard=shard)
