"""The demo runner's ranged runs: the chunks a multi-run BackfillPolicy launches."""
from __future__ import annotations

from intelligence_assets.demo import partition_ranges

KEYS = [f"S{index}" for index in range(10)]


def test_contiguous_stale_keys_become_chunks_of_at_most_max_per_run() -> None:
    assert partition_ranges(KEYS, KEYS, 4) == [("S0", "S3"), ("S4", "S7"), ("S8", "S9")]
    assert partition_ranges(KEYS, KEYS, 100) == [("S0", "S9")]


def test_fresh_keys_split_ranges_so_no_fresh_partition_is_rerun() -> None:
    assert partition_ranges(KEYS, ["S1", "S2", "S5", "S9"], 100) == [("S1", "S2"), ("S5", "S5"), ("S9", "S9")]
    assert partition_ranges(KEYS, [], 100) == []
