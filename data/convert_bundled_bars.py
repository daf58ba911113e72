"""One-off conversion of real daily OHLCV series shipped inside PyPI wheels into data/bars/<SYMBOL>.parquet.

The source packages are NOT dependencies of the project: they are installed into a throwaway
virtual environment only to read the data files they ship. Run once from the repository root:

    python3.11 -m venv /tmp/dataenv
    /tmp/dataenv/bin/pip install arch==8.0.0 pmdarima==2.1.1 bokeh_sampledata==2026.1 polars pyarrow pandas
    /tmp/dataenv/bin/python data/convert_bundled_bars.py

Only polars (and the standard library) is imported here; the source packages are located with
importlib.util.find_spec without executing their code, and their files are read from disk, never
from the network. The output is deterministic: the same package versions give byte-identical files.

Universe and sources (see data/README.md for provenance and licences):
    SP500, NASDAQ  arch              arch/data/sp500/sp500.csv.gz, arch/data/nasdaq/nasdaq.csv.gz
    MSFT           pmdarima          pmdarima/datasets/data/msft.tar.gz (member msft.csv)
    AAPL, IBM, GOOG bokeh_sampledata bokeh_sampledata/_data/stocks.csv.gz

Output schema: timestamp Datetime(us, UTC) at 00:00 UTC of the trading date, open/high/low/close/volume
Float64, sorted ascending with unique timestamps, zstd-compressed Parquet written by polars.
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import hashlib
import importlib.metadata
import importlib.util
import io
import pathlib
import sys
import tarfile

import polars as pl

OUTPUT_DIRECTORY = pathlib.Path(__file__).resolve().parent / "bars"

PRICE_COLUMNS = ("open", "high", "low", "close")
OUTPUT_SCHEMA = {
    "timestamp": pl.Datetime("us", "UTC"),
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
}

# A close-to-close move this large is far more often an unadjusted split than a real market move.
EXTREME_LOG_RETURN = 0.35

# Moves above EXTREME_LOG_RETURN that were investigated and are real market events, not data errors.
# Each entry must match a bar in the data, otherwise the conversion fails (a stale entry would hide nothing
# but would document a check that never ran).
INVESTIGATED_EXTREME_MOVES: dict[tuple[str, datetime.date], str] = {
    ("MSFT", datetime.date(1987, 10, 19)): (
        "Black Monday crash (close 0.33551 -> 0.23483, -30.0%, log -0.357). Not a split: the ratio 0.70 matches "
        "no split ratio (2:1 gives log -0.693, 3:2 gives -0.405), MSFT had no split that day (its 2:1 split was "
        "1987-09-21 and shows no jump in this already-adjusted series), the open had already gapped down "
        "by 5% and the following days do not revert (a further log -0.224 on 1987-10-26)."
    ),
    ("AAPL", datetime.date(2000, 9, 29)): (
        "Apple profit warning issued after the close of 2000-09-28; the raw close fell from 53.50 to 25.75 "
        "(-51.9%), as reported by the press at the time. The adjustment factor is continuous across this "
        "date, so the move is present in the adjusted close as well and is not a split artefact."
    ),
}


@dataclasses.dataclass(frozen=True)
class SourceSeries:
    symbol: str
    package: str
    path_in_package: str
    member: str | None = None
    ticker_in_file: str | None = None


SOURCES = (
    SourceSeries("SP500", "arch", "data/sp500/sp500.csv.gz"),
    SourceSeries("NASDAQ", "arch", "data/nasdaq/nasdaq.csv.gz"),
    SourceSeries("MSFT", "pmdarima", "datasets/data/msft.tar.gz", member="msft.csv"),
    SourceSeries("AAPL", "bokeh_sampledata", "_data/stocks.csv.gz", ticker_in_file="AAPL"),
    SourceSeries("IBM", "bokeh_sampledata", "_data/stocks.csv.gz", ticker_in_file="IBM"),
    SourceSeries("GOOG", "bokeh_sampledata", "_data/stocks.csv.gz", ticker_in_file="GOOG"),
)


@dataclasses.dataclass
class CleaningReport:
    symbol: str
    source_rows: int = 0
    dropped_missing_or_nonfinite: int = 0
    dropped_nonpositive_price: int = 0
    dropped_duplicate_rows: int = 0
    high_raised_to_open_or_close: int = 0
    low_lowered_to_open_or_close: int = 0
    zero_volume_bars: int = 0
    adjusted_by_adj_close: bool = False
    distinct_adjustment_factors: int = 0
    smallest_adjustment_factor: float = 1.0
    largest_adjustment_factor: float = 1.0
    unchanged_close_share: float = 0.0
    largest_abs_log_return: float = 0.0
    largest_abs_log_return_date: datetime.date | None = None
    investigated_moves: list[str] = dataclasses.field(default_factory=list)


def package_directory(package: str) -> pathlib.Path:
    """Directory of an installed package, found without importing (and so without running) it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {package!r} is not installed; see the docstring for the throwaway venv")
    return pathlib.Path(next(iter(spec.submodule_search_locations)))


def source_file(source: SourceSeries) -> pathlib.Path:
    path = package_directory(source.package) / source.path_in_package
    if not path.is_file():
        raise SystemExit(f"{source.symbol}: expected data file {path} is missing")
    return path


def read_csv_bytes(source: SourceSeries, path: pathlib.Path) -> bytes:
    if source.member is not None:
        with tarfile.open(path, "r:gz") as archive:
            extracted = archive.extractfile(source.member)
            if extracted is None:
                raise SystemExit(f"{source.symbol}: {source.member} is not a regular file in {path}")
            return extracted.read()
    with gzip.open(path, "rb") as compressed:
        return compressed.read()


def read_raw_frame(source: SourceSeries, path: pathlib.Path) -> pl.DataFrame:
    """Source rows with normalised column names: date (pl.Date), open..close, volume, optional adj_close."""
    raw = pl.read_csv(
        io.BytesIO(read_csv_bytes(source, path)),
        infer_schema=False,
        null_values=["", "null", "NULL", "NA", "NaN", "nan"],
    )
    raw = raw.rename({name: name.strip().lower().replace(" ", "_") for name in raw.columns})
    if source.ticker_in_file is not None:
        raw = raw.filter(pl.col("ticker") == source.ticker_in_file)
    if raw.height == 0:
        raise SystemExit(f"{source.symbol}: no rows read from {path}")
    # arch writes US month/day/year dates, the other sources ISO dates.
    date_format = "%m/%d/%Y" if "/" in raw["date"][0] else "%Y-%m-%d"
    numeric_columns = [*PRICE_COLUMNS, "volume"] + (["adj_close"] if "adj_close" in raw.columns else [])
    return raw.select(
        pl.col("date").str.strip_chars().str.to_date(date_format, strict=True),
        *[pl.col(name).str.strip_chars().cast(pl.Float64, strict=True) for name in numeric_columns],
    )


def drop_unusable_rows(frame: pl.DataFrame, report: CleaningReport) -> pl.DataFrame:
    value_columns = [name for name in frame.columns if name != "date"]
    all_finite = (
        pl.all_horizontal([pl.col(name).is_not_null() & pl.col(name).is_finite() for name in value_columns])
        & pl.col("date").is_not_null()
    )
    finite = frame.filter(all_finite)
    report.dropped_missing_or_nonfinite = frame.height - finite.height

    price_columns = [name for name in value_columns if name != "volume"]
    positive = finite.filter(pl.all_horizontal([pl.col(name) > 0 for name in price_columns]))
    report.dropped_nonpositive_price = finite.height - positive.height

    negative_volume = positive.filter(pl.col("volume") < 0)
    if negative_volume.height:
        raise SystemExit(f"{report.symbol}: negative volume, refusing to guess a fix:\n{negative_volume}")

    deduplicated = positive.unique(maintain_order=True)
    report.dropped_duplicate_rows = positive.height - deduplicated.height
    conflicting = deduplicated.filter(pl.col("date").is_duplicated())
    if conflicting.height:
        raise SystemExit(f"{report.symbol}: different bars share a date:\n{conflicting}")
    return deduplicated.sort("date")


def repair_inconsistent_ranges(frame: pl.DataFrame, report: CleaningReport) -> pl.DataFrame:
    """Clamp high/low so the bar contains its own open and close (vendor rounding leaves small violations)."""
    body_top = pl.max_horizontal("open", "close")
    body_bottom = pl.min_horizontal("open", "close")
    report.high_raised_to_open_or_close = frame.filter(pl.col("high") < body_top).height
    report.low_lowered_to_open_or_close = frame.filter(pl.col("low") > body_bottom).height
    return frame.with_columns(
        pl.max_horizontal("high", body_top).alias("high"),
        pl.min_horizontal("low", body_bottom).alias("low"),
    )


def adjust_for_splits_and_dividends(frame: pl.DataFrame, report: CleaningReport) -> pl.DataFrame:
    """Rescale by adj_close / close so that the whole bar, not just the close, is split/dividend consistent.

    Volume moves the other way (a 2:1 split doubles the share count traded for the same turnover).
    """
    if "adj_close" not in frame.columns:
        return frame
    report.adjusted_by_adj_close = True
    factor = pl.col("adj_close") / pl.col("close")
    report.distinct_adjustment_factors = frame.select(factor.round(9).n_unique()).item()
    report.smallest_adjustment_factor = frame.select(factor.min()).item()
    report.largest_adjustment_factor = frame.select(factor.max()).item()
    return frame.with_columns(
        *[(pl.col(name) * factor).alias(name) for name in PRICE_COLUMNS],
        (pl.col("volume") / factor).alias("volume"),
    ).drop("adj_close")


def check_extreme_moves(frame: pl.DataFrame, report: CleaningReport) -> None:
    returns = frame.select("date", pl.col("close").log().diff().alias("log_return")).drop_nulls()
    largest = returns.sort(pl.col("log_return").abs(), descending=True, maintain_order=True).row(0, named=True)
    report.largest_abs_log_return = largest["log_return"]
    report.largest_abs_log_return_date = largest["date"]
    # Coarse price ticks (few significant digits on tiny split-adjusted prices) show up as many flat days.
    report.unchanged_close_share = returns.select((pl.col("log_return") == 0).mean()).item()

    dates_in_data = set(frame["date"].to_list())
    for symbol, date in INVESTIGATED_EXTREME_MOVES:
        if symbol == report.symbol and date not in dates_in_data:
            raise SystemExit(f"{symbol}: investigated move on {date} is not in the data; stale entry")

    extreme = returns.filter(pl.col("log_return").abs() > EXTREME_LOG_RETURN)
    unexplained = []
    for date, log_return in extreme.iter_rows():
        explanation = INVESTIGATED_EXTREME_MOVES.get((report.symbol, date))
        if explanation is None:
            unexplained.append(f"{date} log return {log_return:+.4f}")
        else:
            report.investigated_moves.append(f"{date} log return {log_return:+.4f}: {explanation}")
    if unexplained:
        raise SystemExit(
            f"{report.symbol}: |log return| > {EXTREME_LOG_RETURN} (probably an unadjusted split), "
            f"investigate before accepting: {unexplained}"
        )


def to_output_frame(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(
        pl.col("date").cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias("timestamp"),
        *[pl.col(name).cast(pl.Float64) for name in (*PRICE_COLUMNS, "volume")],
    ).sort("timestamp")


def validate(bars: pl.DataFrame, symbol: str) -> None:
    problems = []
    if dict(bars.schema) != OUTPUT_SCHEMA:
        problems.append(f"schema {dict(bars.schema)} != {OUTPUT_SCHEMA}")
    values = [*PRICE_COLUMNS, "volume"]
    if bars.select(pl.any_horizontal([pl.col(n).is_null() | ~pl.col(n).is_finite() for n in values]).any()).item():
        problems.append("null, NaN or infinite values")
    if bars.select(pl.any_horizontal([pl.col(n) <= 0 for n in PRICE_COLUMNS]).any()).item():
        problems.append("non-positive prices")
    if bars.select((pl.col("high") < pl.max_horizontal("open", "close")).any()).item():
        problems.append("high below open or close")
    if bars.select((pl.col("low") > pl.min_horizontal("open", "close")).any()).item():
        problems.append("low above open or close")
    if bars.select((pl.col("volume") < 0).any()).item():
        problems.append("negative volume")
    if bars["timestamp"].null_count() or bars["timestamp"].is_duplicated().any():
        problems.append("missing or duplicate timestamps")
    if not bars["timestamp"].is_sorted():
        problems.append("timestamps not ascending")
    midnight = bars.select((pl.col("timestamp") == pl.col("timestamp").dt.truncate("1d")).all()).item()
    if not midnight:
        problems.append("timestamps not at 00:00 UTC")
    if problems:
        raise SystemExit(f"{symbol}: validation failed: {'; '.join(problems)}")


def convert(source: SourceSeries) -> tuple[pl.DataFrame, CleaningReport]:
    path = source_file(source)
    report = CleaningReport(symbol=source.symbol)
    frame = read_raw_frame(source, path)
    report.source_rows = frame.height
    frame = drop_unusable_rows(frame, report)
    frame = repair_inconsistent_ranges(frame, report)
    frame = adjust_for_splits_and_dividends(frame, report)
    report.zero_volume_bars = frame.filter(pl.col("volume") == 0).height
    check_extreme_moves(frame, report)
    bars = to_output_frame(frame)
    validate(bars, source.symbol)
    return bars, report


def write_bars(bars: pl.DataFrame, symbol: str) -> pathlib.Path:
    OUTPUT_DIRECTORY.mkdir(parents=True, exist_ok=True)
    destination = OUTPUT_DIRECTORY / f"{symbol}.parquet"
    bars.write_parquet(destination, compression="zstd", compression_level=9, statistics=True)
    reread = pl.read_parquet(destination)
    if not reread.equals(bars) or dict(reread.schema) != OUTPUT_SCHEMA:
        raise SystemExit(f"{symbol}: Parquet round trip changed the data")
    return destination


def sha256_of(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def format_price(value: float) -> str:
    return f"{value:.4f}" if value < 10 else f"{value:.2f}"


def main() -> None:
    print(f"polars {pl.__version__}, python {sys.version.split()[0]}")
    for package in sorted({source.package for source in SOURCES}):
        print(f"source package {package} {importlib.metadata.version(package)} at {package_directory(package)}")

    summary_rows = []
    for source in SOURCES:
        bars, report = convert(source)
        destination = write_bars(bars, source.symbol)
        path = source_file(source)
        print(
            f"\n{source.symbol}: {source.package}/{source.path_in_package}"
            + (f" [{source.member}]" if source.member else "")
            + (f" [ticker {source.ticker_in_file}]" if source.ticker_in_file else "")
        )
        print(f"  source sha256 {sha256_of(path)}")
        print(f"  source rows {report.source_rows}, written bars {bars.height}")
        print(
            f"  dropped: missing/non-finite {report.dropped_missing_or_nonfinite}, "
            f"non-positive price {report.dropped_nonpositive_price}, "
            f"exact duplicate rows {report.dropped_duplicate_rows}"
        )
        print(
            f"  repaired: high raised {report.high_raised_to_open_or_close}, "
            f"low lowered {report.low_lowered_to_open_or_close}"
        )
        print(f"  zero-volume bars kept: {report.zero_volume_bars}")
        if report.adjusted_by_adj_close:
            print(
                f"  rescaled by adj_close/close: {report.distinct_adjustment_factors} distinct factors "
                f"from {report.smallest_adjustment_factor:.6f} to {report.largest_adjustment_factor:.6f}"
            )
        else:
            print("  no adjusted-close column: prices used as shipped")
        print(f"  largest |log return| {report.largest_abs_log_return:+.4f} on {report.largest_abs_log_return_date}")
        print(f"  share of bars with an unchanged close: {report.unchanged_close_share:.3f}")
        for note in report.investigated_moves:
            print(f"  accepted extreme move {note}")
        print(
            f"  wrote {destination.relative_to(OUTPUT_DIRECTORY.parent.parent)} "
            f"({destination.stat().st_size} bytes, sha256 {sha256_of(destination)})"
        )
        summary_rows.append(
            (
                source.symbol,
                bars["timestamp"].min().date().isoformat(),
                bars["timestamp"].max().date().isoformat(),
                bars.height,
                format_price(bars["close"].min()),
                format_price(bars["close"].max()),
                f"{report.largest_abs_log_return:+.3f} ({report.largest_abs_log_return_date})",
            )
        )

    header = ("symbol", "first date", "last date", "bars", "min close", "max close", "max abs log return")
    print("\n| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in summary_rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


if __name__ == "__main__":
    main()
