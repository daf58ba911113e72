"""Where raw bars come from: `<SYMBOL>.parquet` files in a local directory (embedded default), or
under a prefix of the artifact store's bucket (MinIO). Each file has a version (size and
modification time) that the new-bars sensor compares with its cursor."""

import io
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from intelligence_assets.ml.bars import read_bars_parquet
from intelligence_assets.store.artifact_store import ArtifactNotFoundError, ArtifactStore

SUFFIX = ".parquet"


@dataclass(frozen=True)
class BarsFile:
    symbol: str
    version: str  # changes whenever the file is rewritten
    location: str


class BarsSource(ABC):
    @abstractmethod
    def files(self) -> list[BarsFile]:
        """Every `<SYMBOL>.parquet`, sorted by symbol."""

    @abstractmethod
    def read(self, symbol: str) -> pl.DataFrame:
        """Raises FileNotFoundError naming where the file was expected."""

    @abstractmethod
    def location(self, symbol: str) -> str: ...


class LocalBarsSource(BarsSource):
    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def files(self) -> list[BarsFile]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            stat = path.stat()
            found.append(BarsFile(path.stem, f"{stat.st_size}-{stat.st_mtime_ns}", str(path)))
        return found

    def read(self, symbol: str) -> pl.DataFrame:
        path = self.directory / f"{symbol}{SUFFIX}"
        if not path.is_file():
            raise FileNotFoundError(f"no bars for symbol {symbol!r}: expected {path}")
        return read_bars_parquet(path)

    def location(self, symbol: str) -> str:
        return str(self.directory / f"{symbol}{SUFFIX}")


class StoreBarsSource(BarsSource):
    def __init__(self, store: ArtifactStore, prefix: str) -> None:
        self.store = store
        self.prefix = prefix.strip("/")

    def files(self) -> list[BarsFile]:
        found = []
        for stored in self.store.list_objects(self.prefix):
            name = stored.key[len(self.prefix) + 1 :]
            if "/" in name or not name.endswith(SUFFIX):
                continue
            found.append(
                BarsFile(
                    name.removesuffix(SUFFIX),
                    f"{stored.bytes}-{stored.modified.isoformat()}",
                    self.store.uri(stored.key),
                )
            )
        return sorted(found, key=lambda file: file.symbol)

    def read(self, symbol: str) -> pl.DataFrame:
        key = f"{self.prefix}/{symbol}{SUFFIX}"
        try:
            data = self.store.get_bytes(key)
        except ArtifactNotFoundError:
            raise FileNotFoundError(f"no bars for symbol {symbol!r}: expected {self.store.uri(key)}") from None
        return read_bars_parquet(io.BytesIO(data), name=self.store.uri(key))

    def location(self, symbol: str) -> str:
        return self.store.uri(f"{self.prefix}/{symbol}{SUFFIX}")
