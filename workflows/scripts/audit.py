"""Snakemake job: the audit (every claim of the experiments, flatmin.claims.collect_claims()) and Table 1,
from the results tables."""

import sys
from pathlib import Path

smk = snakemake  # noqa: F821 (injected by Snakemake's script directive)
sys.path.insert(0, str(Path(smk.scriptdir).parents[1] / "src"))  # this checkout's flatmin

from flatmin.workflow import audit_to_files, prepare, tee_output  # noqa: E402

with tee_output(smk.log[0]):
    prepare(smk.config, threads=1)
    results = {name: smk.input[name] for name in smk.params.experiments}
    audit_to_files(results, smk.config, dict(smk.output.items()))
