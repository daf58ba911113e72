"""A section that an overhead run skips is kept from the results file, with the date it was measured."""

from __future__ import annotations

from pathlib import Path

from benchmarks.overhead import earlier_section

RESULTS = """# Orchestration overhead

`make bench` (`benchmarks/overhead.py --repeats 2`) on 2 cores; 2026-12-06 18:02 UTC, load average 0.35.

## (a) The same work four ways

| way | wall s |
|---|---:|
| Dagster | 67.2 |

## (d) The instance's storage

| instance | wall s |
"""


def test_a_skipped_section_is_kept_with_the_date_of_the_run_that_measured_it(tmp_path: Path) -> None:
    results = tmp_path / "overhead.md"
    results.write_text(RESULTS)
    kept = earlier_section(results, "(a)")
    assert kept == [
        "## (a) The same work four ways",
        "",
        "*Kept from an earlier run (2026-12-06 18:02 UTC): the run that wrote this file skipped this section.*",
        "",
        "| way | wall s |",
        "|---|---:|",
        "| Dagster | 67.2 |",
        "",
    ]
    # Kept again by a later run (whose own first line has another date): still the measuring run's.
    later_header = ["# Orchestration overhead", "", "`make bench` on 2 cores; 2026-12-07 17:23 UTC.", ""]
    results.write_text("\n".join([*later_header, *kept, "## (d) The instance's storage", ""]))
    assert earlier_section(results, "(a)") == kept
    assert earlier_section(results, "(b)") == []
