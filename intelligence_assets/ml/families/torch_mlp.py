"""A small PyTorch multilayer perceptron over one bar's features, early-stopped on the
validation loss (training, prediction and the saved format: `_torch.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import Field

from intelligence_assets.ml.families._torch import COMMON_PARAMS, TorchFamily, TorchSettings
from intelligence_assets.ml.families.base import FamilySettings, Integer


class TorchMLPSettings(TorchSettings):
    hidden_sizes: list[Annotated[Integer, Field(ge=1)]]
    """Widths of the hidden layers, input side first, e.g. [64, 32]; [] for none."""


class TorchMLPFamily(TorchFamily):
    name: ClassVar[str] = "torch_mlp"
    version: ClassVar[str] = "1"
    settings_model: ClassVar[type[FamilySettings]] = TorchMLPSettings
    default_params: ClassVar[dict[str, Any]] = {
        "hidden_sizes": [64, 32],
        "dropout": 0.1,
        "batch_size": 256,
        "max_epochs": 100,
        "patience": 10,
        **COMMON_PARAMS,
    }
    search_space: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "learning_rate": {"low": 0.0001, "high": 0.01, "log": True},
        "weight_decay": {"low": 0.000001, "high": 0.01, "log": True},
        "dropout": {"low": 0.0, "high": 0.5},
        "hidden_sizes": {"choices": [[32], [64, 32], [128, 64]]},
    }

    def architecture(self) -> dict[str, Any]:
        settings = self._settings()
        return {"hidden_sizes": [int(size) for size in settings["hidden_sizes"]], "dropout": float(settings["dropout"])}

    @staticmethod
    def build_network(n_features: int, architecture: dict[str, Any]) -> Any:
        from torch import nn

        class SqueezedSequential(nn.Sequential):
            # A Sequential (its state_dict keys are those of every saved model) with a 1-d output.
            def forward(self, x: Any) -> Any:
                return super().forward(x).squeeze(1)

        layers: list[nn.Module] = []
        width = n_features
        for hidden in architecture["hidden_sizes"]:
            layers += [nn.Linear(width, int(hidden)), nn.ReLU(), nn.Dropout(float(architecture["dropout"]))]
            width = int(hidden)
        layers.append(nn.Linear(width, 1))
        return SqueezedSequential(*layers)


FAMILY = TorchMLPFamily
