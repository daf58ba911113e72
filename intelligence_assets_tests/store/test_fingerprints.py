import polars as pl

from intelligence_assets.store.fingerprints import table_fingerprint


def test_table_fingerprint_changes_exactly_with_content() -> None:
    base = pl.DataFrame({"x": [1.0, None, 3.0], "name": ["a" * 50] * 2 + ["b"], "flag": [True, False, None]})
    long = pl.DataFrame({"name": ["same"] * 5000})
    assert table_fingerprint(base) == table_fingerprint(base.clone())
    assert table_fingerprint(base) != table_fingerprint(base.with_columns(pl.col("x").fill_null(0.0)))
    assert table_fingerprint(base) != table_fingerprint(base.rename({"x": "y"}))
    # A change deep inside a long string column is seen (no truncated rendering).
    changed = long.with_columns(
        pl.when(pl.int_range(pl.len()) == 4000).then(pl.lit("diff")).otherwise(pl.col("name")).alias("name")
    )
    assert table_fingerprint(long) != table_fingerprint(changed)
