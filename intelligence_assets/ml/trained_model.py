"""A model asset's value: the fitted model (absent when ranking gated the target) plus a
JSON summary of how it was trained and how it scored."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from intelligence_assets.ml.families import ModelFamily, load_family

SUMMARY_FILE = "summary.json"
MODEL_FOLDER = "model"


@dataclass
class TrainedModel:
    family: str
    summary: dict[str, Any] = field(default_factory=dict)
    model: ModelFamily | None = None

    @property
    def trained(self) -> bool:
        return self.model is not None

    @property
    def feature_names(self) -> list[str]:
        return list(self.summary.get("features", []))

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise ValueError(f"{self.family} model was not trained: {self.summary.get('reason', 'no reason recorded')}")
        return self.model.predict(x)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        summary = {**self.summary, "family": self.family, "trained": self.trained}
        (directory / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True, allow_nan=False))
        if self.model is not None:
            (directory / MODEL_FOLDER).mkdir()
            self.model.save(directory / MODEL_FOLDER)

    @classmethod
    def load(cls, directory: Path) -> TrainedModel:
        summary = json.loads((directory / SUMMARY_FILE).read_text())
        family = summary["family"]
        model = load_family(family).load(directory / MODEL_FOLDER) if summary.get("trained") else None
        return cls(family=family, summary=summary, model=model)
