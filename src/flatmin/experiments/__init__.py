"""Experiments, one module each, called by the thin workflow scripts.

Contract of an experiment module ``flatmin.experiments.<name>``:

``compute(config: dict) -> pandas.DataFrame``
    Runs the experiment described by ``config`` (the experiment's section of the workflow config,
    validated by ``workflows/schema/config.schema.yaml``) and returns a tidy results table.
    Deterministic given the config (seeds live in it). Prints progress lines to stderr.
``plot(results: pandas.DataFrame, config: dict) -> matplotlib.figure.Figure``
    The experiment's figure from its results table: labelled axes with units, a caption-ready
    title, no NaN silently dropped (rows with non-finite values raise).

``CLAIMS: tuple[flatmin.claims.Claim, ...]``
    The paper's claims this experiment's results table supports, at the end of the module beside the
    statistics they read; the audit (:func:`flatmin.claims.collect_claims`) gathers them in the order
    of :data:`EXPERIMENTS`.
"""

EXPERIMENTS = ("identities", "decrease", "complexity", "trajectories", "example1", "escape", "generalization")
