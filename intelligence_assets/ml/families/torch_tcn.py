"""A temporal convolutional network (TCN) over windows of past bars.

Each row is predicted from the `window` most recent rows up to and including it, through causal,
dilated 1-d convolutions: nothing after the row is read. Rows are taken in the order given (time
order: the splits keep it); before an array's first row the first row is repeated, so an array
scored alone (the test period, or new bars) needs no history from elsewhere and a prediction
never depends on how the rows were chunked.

Where the MLP sees one bar, this family sees a window of them, which is also what keeps a GPU
busy: a batch is `batch_size` windows of `window` x features, convolved by `channels` filters.
Windows are cut on the device from one standardized copy of the data (`unfold`), so no batch
crosses from host to device. On CUDA it trains in bfloat16 autocast (`mixed_precision`) with a
fused optimizer step. Training, prediction and the saved format: `_torch.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field, StrictBool

from intelligence_assets.ml.families._torch import COMMON_PARAMS, TorchFamily, TorchSettings
from intelligence_assets.ml.families.base import FamilySettings, Integer, Task


def windows_of(rows: Any, window: int) -> Any:
    """(rows, features) -> (rows, features, window) view: row i's window ends at row i; the first
    row stands in for rows before the start."""
    import torch

    padded = torch.cat([rows[:1].expand(window - 1, -1), rows]) if window > 1 else rows
    return padded.unfold(0, window, 1)


class TorchTCNSettings(TorchSettings):
    window: Integer = Field(ge=1)
    """Rows each prediction reads: the row and the window - 1 before it."""
    channels: Integer = Field(ge=1)
    """Filters of each convolution."""
    levels: Integer = Field(ge=1)
    """Convolutions, dilated 1, 2, 4, ...: the receptive field is 1 + (kernel_size - 1) * (2 ** levels - 1) rows."""
    kernel_size: Integer = Field(ge=1)
    """Taps of each convolution."""
    mixed_precision: StrictBool
    """bfloat16 autocast when training on CUDA (true or false)."""


class TorchTCNFamily(TorchFamily):
    name: ClassVar[str] = "torch_tcn"
    version: ClassVar[str] = "1"
    settings_model: ClassVar[type[FamilySettings]] = TorchTCNSettings
    default_params: ClassVar[dict[str, Any]] = {
        "window": 32,
        "channels": 64,
        "levels": 3,
        "kernel_size": 3,
        "dropout": 0.1,
        "batch_size": 512,
        "max_epochs": 60,
        "patience": 8,
        "mixed_precision": True,
        **COMMON_PARAMS,
    }
    search_space: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "learning_rate": {"low": 0.0001, "high": 0.01, "log": True},
        "dropout": {"low": 0.0, "high": 0.5},
        "channels": {"choices": [16, 32, 64]},
        "levels": {"low": 1, "high": 4},
    }

    def __init__(self, task: Task, params: dict[str, Any], seed: int) -> None:
        super().__init__(task, params, seed)
        unknown = sorted(set(self.params) - set(self.default_params))
        if unknown:
            raise ValueError(f"torch_tcn: unknown params {unknown}; known: {sorted(self.default_params)}")
        if int(self._settings()["window"]) < 1:
            raise ValueError("torch_tcn: window must be at least 1")

    def architecture(self) -> dict[str, Any]:
        settings = self._settings()
        return {key: int(settings[key]) for key in ("window", "channels", "levels", "kernel_size")} | {
            "dropout": float(settings["dropout"])
        }

    def shape_inputs(self, rows: Any) -> Any:
        return windows_of(rows, self.architecture()["window"])

    def autocast(self, device: Any) -> bool:
        return bool(self._settings()["mixed_precision"]) and device.type == "cuda"

    def optimizer_options(self, device: Any) -> dict[str, Any]:
        # fused: one kernel for the whole update on CUDA instead of one per parameter tensor.
        return {"fused": device.type == "cuda"}

    @staticmethod
    def build_network(n_features: int, architecture: dict[str, Any]) -> Any:
        """(batch, features, window) -> (batch,): dilations 1, 2, 4, ... so the receptive field
        covers 1 + (kernel_size - 1) * (2 ** levels - 1) rows; the head reads the last position."""
        import torch
        from torch import nn

        kernel_size = int(architecture["kernel_size"])

        class CausalConvolution(nn.Module):
            def __init__(self, inputs: int, outputs: int, dilation: int) -> None:
                super().__init__()
                self.left_padding = (kernel_size - 1) * dilation
                self.convolution = nn.Conv1d(inputs, outputs, kernel_size, dilation=dilation)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.convolution(nn.functional.pad(x, (self.left_padding, 0)))

        class TemporalConvolutionNetwork(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                layers: list[nn.Module] = []
                width = n_features
                for level in range(int(architecture["levels"])):
                    layers += [
                        CausalConvolution(width, int(architecture["channels"]), 2**level),
                        nn.ReLU(),
                        nn.Dropout(float(architecture["dropout"])),
                    ]
                    width = int(architecture["channels"])
                self.body = nn.Sequential(*layers)
                self.head = nn.Linear(width, 1)

            def forward(self, windows: torch.Tensor) -> torch.Tensor:
                return self.head(self.body(windows)[:, :, -1]).squeeze(1)

        return TemporalConvolutionNetwork()


FAMILY = TorchTCNFamily
