"""The tables a reader looks for first: the yardstick's ranking (``ranking.md``) and the report's front
page (``summary.html``: the audit's verdict counts, Table 1 and the ranking), written by the audit job
(:func:`flatmin.workflow.audit_to_files`)."""

from __future__ import annotations

import html

import pandas as pd

RANKING_SOURCE = (
    "Per problem, at its calibration eps (the smallest of its sweep, where each method's setting was tuned on "
    "seeds of its own), the methods ranked by the median per-sample gradient queries to the first "
    "(eps, sqrt(eps))-flat point over the sweep's seeds (a seed not flat within the budget counts as "
    "infinite), with a 95% bootstrap interval; from the yardstick's results table "
    "(flatmin.experiments.yardstick).")


def ranking_frame(results: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    """The yardstick's ranking (:func:`flatmin.experiments.yardstick.ranking`), None if it did not run."""
    if "yardstick" not in results:
        return None
    from flatmin.experiments.yardstick import ranking

    return ranking(results["yardstick"])


def ranking_markdown(ranking: pd.DataFrame | None, table) -> str:
    """``ranking.md`` without its provenance footer; ``table`` renders a frame as Markdown."""
    head = "# Which method finds flat minima fastest: the yardstick's ranking\n\n"
    if ranking is None:
        return head + "The yardstick did not run in this profile (experiments.yardstick.enabled is false).\n"
    return head + RANKING_SOURCE + "\n\n" + table(ranking)


def summary_html(audit: pd.DataFrame, table1: pd.DataFrame, ranking: pd.DataFrame | None, profile: str,
                 footer: str) -> str:
    """The report's front page: the verdict counts, Table 1 and the ranking, each saying where it comes from."""
    counts = audit["verdict"].value_counts()
    verdicts = "".join(f"<li>{html.escape(str(verdict))}: {count}</li>" for verdict, count in counts.items())
    worst = audit[audit["verdict"] == "not confirmed"]["id"].tolist()
    sections = [
        f"<h1>flatmin, {html.escape(profile)} profile: what the measurements say</h1>",
        f"<h2>The audit: {len(audit)} claims</h2><ul>{verdicts}</ul>",
        f"<p>Not confirmed: {html.escape(', '.join(worst)) if worst else 'none'} (audit.csv has each one's "
        "statistic, interval and note).</p>",
        "<h2>Table 1: the paper's rates beside the measured exponents</h2>",
        "<p>From the audit's claims on E3's and E2's results tables (flatmin.claims.table1).</p>",
        table1.to_html(index=False, na_rep="—"),
        "<h2>Which method finds flat minima fastest</h2>",
        f"<p>{html.escape(RANKING_SOURCE)}</p>" + ranking.to_html(index=False) if ranking is not None else
        "<p>The yardstick did not run in this profile.</p>",
        f"<p><small>{html.escape(footer.strip())}</small></p>",
    ]
    return "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>flatmin summary</title></head><body>\n" + \
        "\n".join(sections) + "\n</body></html>\n"
