"""Snakemake job: one experiment's figure (PDF and PNG, each with a provenance sidecar)."""

import sys
from pathlib import Path

smk = snakemake  # noqa: F821 (injected by Snakemake's script directive)
sys.path.insert(0, str(Path(smk.scriptdir).parents[1] / "src"))  # this checkout's flatmin

from flatmin.workflow import plot_to_files, prepare, tee_output  # noqa: E402

with tee_output(smk.log[0]):
    prepare(smk.config, threads=1)
    plot_to_files(smk.params.experiment, smk.params.section, smk.input.csv, [smk.output.pdf, smk.output.png])
