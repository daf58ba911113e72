"""A small universe in which some symbols' bars are broken, as users' files break."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import yaml

from intelligence_assets_tests.conftest import write_small_universe


def write_universe_with_broken_bars(directory: Path, symbols: list[str]) -> Path:
    """The small universe (SIGNAL, NOISE; `linear` only) with `symbols` listed, beside BROKEN
    (one negative low: `prices_positive`, a blocking check, fails) and GARBLED (not a Parquet
    file)."""
    path = write_small_universe(directory, families={"linear": {"params": {}}})
    bars = directory / "bars"
    pl.read_parquet(bars / "NOISE.parquet").with_columns(
        pl.when(pl.int_range(pl.len()) == 300).then(-1.0).otherwise(pl.col("low")).alias("low")
    ).write_parquet(bars / "BROKEN.parquet")
    (bars / "GARBLED.parquet").write_bytes(b"not parquet at all")
    config = yaml.safe_load(path.read_text())
    config["symbols"] = symbols
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
