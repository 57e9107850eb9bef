"""Smoke run of benchmarks/run_overhead.py (small sizes): it runs and writes its table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from flatmin import provenance

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run_overhead.py"


def test_run_overhead_quick_writes_its_table(tmp_path):
    spec = importlib.util.spec_from_file_location("run_overhead", SCRIPT)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    out = tmp_path / "benchmark_run.md"
    assert benchmark.main(["--quick", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| 10 | 1 |" in text and "new `eta_prime`, same shape" in text and "| 100 |" in text
    assert provenance.read_sidecar(out)["config"]["quick"] is True
