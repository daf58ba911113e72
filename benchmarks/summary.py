"""The headline figures of every benchmark, in one file: `benchmarks/results/summary.json`.

A list of objects `{name, value, goal, better, cores, machine, date, commit}`, one per figure
and core count. Each benchmark records its own figures when it runs (`record`); a figure
measured again replaces the one with the same name and core count, and the table of them in
`benchmarks/README.md` is rewritten (`python -m benchmarks.summary` rewrites it by hand).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from benchmarks.machine import describe_machine

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
SUMMARY = REPOSITORY_ROOT / "benchmarks" / "results" / "summary.json"
README = REPOSITORY_ROOT / "benchmarks" / "README.md"
# What the benchmarks write (results, this table), relative to the repository root.
WRITTEN = tuple(str(path.relative_to(REPOSITORY_ROOT)) for path in (SUMMARY.parent, README))
TABLE_START = "<!-- summary table: written by `python -m benchmarks.summary` -->"
TABLE_END = "<!-- end of summary table -->"


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    goal: float | None
    better: Literal["lower", "higher"]
    cores: int
    machine: str
    date: str
    commit: str

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.value <= self.goal if self.better == "lower" else self.value >= self.goal


def current_commit(root: Path = REPOSITORY_ROOT) -> str:
    """The commit the benchmark ran on, `+changes` when the code differed from it. What the
    benchmarks themselves write (`WRITTEN`) does not count: a second benchmark run on the same
    checkout runs the same code."""

    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=root, capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or os.environ.get("INTELLIGENCE_COMMIT", "unknown")
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", *(f":!{path}" for path in WRITTEN))
    return commit + ("+changes" if changed else "")


def load(path: Path = SUMMARY) -> list[Figure]:
    if not path.exists():
        return []
    entries = json.loads(path.read_text())
    # The file held one object per benchmark before it became a list of figures.
    return [Figure(**entry) for entry in entries] if isinstance(entries, list) else []


def record(
    name: str,
    value: float,
    *,
    goal: float | None,
    better: Literal["lower", "higher"],
    cores: int | None = None,
    machine: str | None = None,
    date: str | None = None,
    commit: str | None = None,
    path: Path = SUMMARY,
) -> Figure:
    """Write one figure into the summary (replacing the figure of that name and core count) and
    return it. `cores` defaults to this machine's, `machine` to its description; `date` and
    `commit` (when and at which commit it was measured) to now and this checkout's."""
    figure = Figure(
        name=name,
        value=round(float(value), 4),
        goal=goal,
        better=better,
        cores=cores or os.cpu_count() or 1,
        machine=machine or describe_machine(),
        date=date or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        commit=commit or current_commit(),
    )
    figures = [kept for kept in load(path) if (kept.name, kept.cores) != (name, figure.cores)]
    figures.append(figure)
    figures.sort(key=lambda kept: (kept.name, kept.cores))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps([asdict(kept) for kept in figures], indent=2) + "\n")
    temporary.replace(path)
    if path == SUMMARY:
        render_readme()
    return figure


def markdown_table(figures: list[Figure]) -> str:
    def number(value: float | None) -> str:
        if value is None:
            return ""
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"

    lines = [
        "| figure | cores | value | goal | met | machine | date | commit |",
        "|---|---:|---:|---:|---|---|---|---|",
    ]
    for figure in figures:
        goal = f"{'<=' if figure.better == 'lower' else '>='} {number(figure.goal)}" if figure.goal is not None else ""
        met = {True: "yes", False: "**no**", None: ""}[figure.met]
        machine = figure.machine.split(";")[0]
        lines.append(
            f"| {figure.name} | {figure.cores} | {number(figure.value)} | {goal} | {met} | {machine} | "
            f"{figure.date} | `{figure.commit}` |"
        )
    return "\n".join(lines)


def render_readme() -> None:
    """Replace the summary table in benchmarks/README.md with the figures in summary.json."""
    text = README.read_text()
    table = f"{TABLE_START}\n{markdown_table(load())}\n{TABLE_END}"
    if TABLE_START in text:
        before, rest = text.split(TABLE_START, 1)
        text = before + table + rest.split(TABLE_END, 1)[1]
    else:
        title, _, body = text.partition("\n")
        text = f"{title}\n\n## Headline figures\n\n{table}\n{body}"
    README.write_text(text)


if __name__ == "__main__":
    render_readme()
    print(f"rewrote the summary table in {README.relative_to(REPOSITORY_ROOT)}")
