"""benchmarks/results/summary.json: one figure per name and core count, as the benchmarks record them."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.machine import described_date
from benchmarks.summary import REPOSITORY_ROOT, SUMMARY, current_commit, load, markdown_table, record

FIELDS = {"name", "value", "goal", "better", "cores", "machine", "date", "commit"}


def test_a_figure_measured_again_replaces_the_one_of_its_name_and_core_count(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    record("Dagster / pool", 1.6, goal=1.15, better="lower", cores=2, machine="m", path=path)
    record("Dagster / pool", 0.9, goal=1.15, better="lower", cores=16, machine="m", path=path)
    record("Dagster / pool", 1.4, goal=1.15, better="lower", cores=2, machine="m", path=path)
    entries = json.loads(path.read_text())
    assert [(entry["cores"], entry["value"]) for entry in entries] == [(2, 1.4), (16, 0.9)]
    assert all(set(entry) == FIELDS for entry in entries)
    table = markdown_table(load(path))
    assert "| Dagster / pool | 2 | 1.4 | <= 1.15 | **no** |" in table
    assert "| Dagster / pool | 16 | 0.9 | <= 1.15 | yes |" in table


def test_a_figure_rendered_later_keeps_when_and_at_which_commit_it_was_measured(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    record("Dagster / pool", 1.1, goal=1.15, better="lower", cores=1, path=path)
    measured_at = described_date("16 cores (Xeon); Linux 6; Python 3.12.3; 2026-12-06 17:22 UTC, load average 0.27")
    record("Dagster / pool", 0.9, goal=1.15, better="lower", cores=2, date=measured_at, commit="72afc83", path=path)
    by_cores = {figure.cores: figure for figure in load(path)}
    assert by_cores[1].date >= started and by_cores[1].commit == current_commit()  # measured here, now
    assert (by_cores[2].date, by_cores[2].commit) == ("2026-12-06 17:22 UTC", "72afc83")


def test_a_commit_reads_changed_when_the_code_changed_not_when_a_benchmark_wrote_its_results(
    tmp_path: Path,
) -> None:
    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    files = {name: tmp_path / name for name in ("benchmarks/overhead.py", "benchmarks/README.md")}
    files["result"] = tmp_path / "benchmarks" / "results" / "summary.json"
    for path in files.values():
        path.write_text("first\n")
    git("init", "--quiet")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "first")
    commit = git("rev-parse", "--short=12", "HEAD").strip()
    files["result"].write_text("written by a benchmark\n")
    files["benchmarks/README.md"].write_text("its table rewritten\n")
    (tmp_path / "benchmarks" / "results" / "new.md").write_text("a new results file\n")
    assert current_commit(tmp_path) == commit
    files["benchmarks/overhead.py"].write_text("the code changed\n")
    assert current_commit(tmp_path) == f"{commit}+changes"


def test_the_committed_summary_is_a_list_of_figures_and_the_benchmarks_readme_shows_each() -> None:
    figures = load(SUMMARY)
    assert figures and isinstance(json.loads(SUMMARY.read_text()), list)
    readme = (REPOSITORY_ROOT / "benchmarks" / "README.md").read_text()
    assert all(f"| {figure.name} | {figure.cores} |" in readme for figure in figures)
