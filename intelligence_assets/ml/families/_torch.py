"""What the PyTorch families share: standardization, the early-stopped training loop, CPU
prediction in chunks, the MLflow serving module and the saved format. A family supplies its
network and how rows become network inputs (one row, or a window of past rows).

Inputs are standardized with statistics of the training rows only (and, for regression, so is
the target); the statistics travel with the model. Training uses CUDA when visible; prediction
always runs on the CPU in float32, so a reloaded model predicts bit-identically.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

import numpy as np
from pydantic import Field

from intelligence_assets.ml.families.base import FamilySettings, Integer, ModelFamily, Number, Task, standardization

MODEL_FILE = "model.pt"

# Rows per forward pass at prediction time; fixed so that a prediction never depends on how
# many rows were asked for at once beyond this chunking.
PREDICT_CHUNK_ROWS = 65_536

# Every torch family takes these; each adds its architecture's.
COMMON_PARAMS: dict[str, Any] = {
    "learning_rate": 1e-3,
    "weight_decay": 1e-4,
    "device": "auto",
    # CPU threads while fitting and predicting, restored afterwards; None leaves torch's
    # setting alone. One thread by default: matrices this small gain nothing from more, and
    # on two busy cores two spinning OpenMP threads made fits erratic, up to tenfold slower,
    # in measurements here.
    "num_threads": 1,
}


class TorchSettings(FamilySettings):
    """What every torch family reads (`COMMON_PARAMS` and the training loop's settings); each family
    adds its architecture's."""

    learning_rate: Number = Field(gt=0)
    """AdamW's step size."""
    weight_decay: Number = Field(ge=0)
    """AdamW's decoupled weight decay."""
    device: str = Field(pattern=r"^(auto|cpu|mps|(cuda|xpu)(:[0-9]+)?)$")
    """auto (cuda when visible, else cpu), cpu, cuda, cuda:<index>, mps or xpu."""
    num_threads: Annotated[Integer, Field(ge=1)] | None
    """CPU threads while fitting and predicting; null leaves torch's setting alone."""
    batch_size: Integer = Field(ge=1)
    """Rows per optimizer step."""
    max_epochs: Integer = Field(ge=1)
    """Epochs at most."""
    patience: Integer = Field(ge=1)
    """Epochs without a better validation loss before training stops."""
    dropout: Number = Field(ge=0, lt=1)
    """Share of activations dropped while training."""


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    import torch

    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(num_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def resolve_device(device: str) -> Any:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def serving_network(family: TorchFamily) -> Any:
    """The network with standardization, input shaping and output transform inside, so that a
    tool calling `module(x)` on raw feature rows gets what the family's `predict` returns."""
    import torch
    from torch import nn

    network, shape_inputs, task = family.network, family.shape_inputs, family.task
    target_mean, target_std = family.target_mean, family.target_std

    class ServingNetwork(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network
            self.register_buffer("feature_mean", torch.as_tensor(family.feature_mean, dtype=torch.float64))
            self.register_buffer("feature_std", torch.as_tensor(family.feature_std, dtype=torch.float64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # Standardize in float64 then cast, as `predict` does.
            standardized = ((x.to(torch.float64) - self.feature_mean) / self.feature_std).to(torch.float32)
            output = self.network(shape_inputs(standardized))
            if task == "classification":
                return torch.sigmoid(output)
            return output.to(torch.float64) * target_std + target_mean

    return ServingNetwork().eval()


class TorchFamily(ModelFamily):
    """Subclasses set `name`, `version`, `default_params` and implement `architecture`,
    `build_network` (a module mapping shaped inputs to a 1-d output) and, when a row's input is
    more than the row itself, `shape_inputs`."""

    uses_gpu: ClassVar[bool] = True
    can_use_gpu: ClassVar[bool] = True
    # The optimizer's first construction imports torch._dynamo: over a second, once per process.
    libraries: ClassVar[tuple[str, ...]] = ("torch", "torch._dynamo")
    # Every torch family alike: MLflow's PyTorch flavour saves `serving_network`.
    kinds: ClassVar[tuple[str, ...]] = ("pytorch",)
    mlflow_flavour: ClassVar[str] = "pytorch"
    pip_requirements: ClassVar[tuple[str, ...]] = ("torch",)
    default_params: ClassVar[dict[str, Any]]

    @classmethod
    def accepted_params(cls) -> frozenset[str]:
        # Every setting the family reads has a default, so the defaults name them all.
        return frozenset(cls.default_params)

    def __init__(self, task: Task, params: dict[str, Any], seed: int) -> None:
        super().__init__(task, params, seed)
        self.network: Any = None
        self.feature_mean: np.ndarray | None = None
        self.feature_std: np.ndarray | None = None
        self.target_mean = 0.0
        self.target_std = 1.0

    # ---- what a family defines

    def architecture(self) -> dict[str, Any]:
        """The settings that shape the network; saved with the model."""
        raise NotImplementedError

    @staticmethod
    def build_network(n_features: int, architecture: dict[str, Any]) -> Any:
        raise NotImplementedError

    def shape_inputs(self, rows: Any) -> Any:
        """Standardized rows (n, features) -> the network's input for each row."""
        return rows

    def optimizer_options(self, device: Any) -> dict[str, Any]:
        return {}

    def autocast(self, device: Any) -> bool:
        return False

    # ---- shared

    def _settings(self) -> dict[str, Any]:
        return self.default_params | self.params

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray) -> Self:
        x_train, y_train, x_valid, y_valid = self._check_fit_inputs(x_train, y_train, x_valid, y_valid)
        with torch_threads(self._settings()["num_threads"]):
            self._fit(x_train, y_train, x_valid, y_valid)
        return self

    def _fit(self, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray) -> None:
        import torch
        from torch import nn

        settings = self._settings()
        architecture = self.architecture()
        device = resolve_device(str(settings["device"]))
        autocast = self.autocast(device)

        self.feature_mean, self.feature_std = standardization(x_train)
        if self.task == "regression":
            target_mean, target_std = standardization(y_train[:, None])
            self.target_mean, self.target_std = float(target_mean[0]), float(target_std[0])

        def on_device(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            inputs = self.shape_inputs(torch.from_numpy(self._standardize(x)).to(device))
            target = (y - self.target_mean) / self.target_std if self.task == "regression" else y
            return inputs, torch.from_numpy(target.astype(np.float32)).to(device)

        def forward(network: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=autocast):
                return network(inputs).float()

        train_x, train_y = on_device(x_train, y_train)
        valid_x, valid_y = on_device(x_valid, y_valid)
        loss_function: nn.Module = nn.BCEWithLogitsLoss() if self.task == "classification" else nn.MSELoss()

        # fork_rng keeps the seeding (weight init, dropout masks) from leaking into the caller's
        # global random state.
        rng_devices = (
            [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        )
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(self.seed)
            network = self.build_network(x_train.shape[1], architecture).to(device)
            optimizer = torch.optim.AdamW(
                network.parameters(),
                lr=float(settings["learning_rate"]),
                weight_decay=float(settings["weight_decay"]),
                **self.optimizer_options(device),
            )
            shuffle_generator = torch.Generator().manual_seed(self.seed)
            batch_size = int(settings["batch_size"])
            patience = int(settings["patience"])

            best_loss = float("inf")
            best_epoch = 0
            best_state: dict[str, torch.Tensor] = {}
            self.training_curve = []
            for epoch in range(1, int(settings["max_epochs"]) + 1):
                network.train()
                order = torch.randperm(train_x.shape[0], generator=shuffle_generator).to(device)
                for start in range(0, train_x.shape[0], batch_size):
                    batch = order[start : start + batch_size]
                    optimizer.zero_grad(set_to_none=True)
                    loss = loss_function(forward(network, train_x[batch]), train_y[batch])
                    loss.backward()
                    optimizer.step()

                network.eval()
                with torch.no_grad():
                    # In chunks: a long validation period need not fit in memory at once.
                    outputs = [
                        forward(network, valid_x[s : s + PREDICT_CHUNK_ROWS])
                        for s in range(0, valid_x.shape[0], PREDICT_CHUNK_ROWS)
                    ]
                    validation_loss = float(loss_function(torch.cat(outputs), valid_y))
                self.training_curve.append(validation_loss)
                # The first epoch always counts, so a diverged (NaN) run still yields a model.
                if epoch == 1 or validation_loss < best_loss:
                    best_loss, best_epoch = validation_loss, epoch
                    best_state = {
                        key: value.detach().to("cpu", copy=True) for key, value in network.state_dict().items()
                    }
                elif epoch - best_epoch >= patience:
                    break

        self.best_iteration = best_epoch
        self.network = self._network_without_init(x_train.shape[1], architecture)
        self.network.load_state_dict(best_state)
        self.network.eval()

    def _network_without_init(self, n_features: int, architecture: dict[str, Any]) -> Any:
        """A network whose weights are about to be overwritten: its throwaway random init must not
        draw from (and so shift) the caller's global torch random state."""
        import torch

        with torch.random.fork_rng(devices=[]):
            return self.build_network(n_features, architecture)

    def _standardize(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.feature_mean) / self.feature_std).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        import torch

        x = self._check_predict_input(x)
        if self.network is None:
            raise RuntimeError(f"{self.name}: predict called before fit (or load)")
        inputs = self.shape_inputs(torch.from_numpy(self._standardize(x)))
        outputs = []
        with torch_threads(self._settings()["num_threads"]), torch.no_grad():
            for start in range(0, inputs.shape[0], PREDICT_CHUNK_ROWS):
                output = self.network(inputs[start : start + PREDICT_CHUNK_ROWS])
                if self.task == "classification":
                    output = torch.sigmoid(output)
                outputs.append(output.numpy().astype(np.float64))
        prediction = np.concatenate(outputs)
        if self.task == "regression":
            prediction = prediction * self.target_std + self.target_mean
        return prediction

    def native_model(self) -> Any:
        if self.network is None:
            raise RuntimeError(f"{self.name}: native_model called before fit")
        return serving_network(self)

    def save(self, directory: Path) -> None:
        import torch

        if self.network is None:
            raise RuntimeError(f"{self.name}: save called before fit")
        directory = Path(directory)
        torch.save(self.network.state_dict(), directory / MODEL_FILE)
        self._write_meta(
            directory,
            architecture=self.architecture(),
            # float64 values round-trip exactly through JSON.
            feature_mean=self.feature_mean.tolist(),
            feature_std=self.feature_std.tolist(),
            target_mean=self.target_mean,
            target_std=self.target_std,
        )

    @classmethod
    def load(cls, directory: Path) -> Self:
        import torch

        instance, meta = cls._read_meta(directory)
        instance.feature_mean = np.asarray(meta["feature_mean"], dtype=np.float64)
        instance.feature_std = np.asarray(meta["feature_std"], dtype=np.float64)
        instance.target_mean = float(meta["target_mean"])
        instance.target_std = float(meta["target_std"])
        network = instance._network_without_init(instance.n_features, meta["architecture"])
        network.load_state_dict(torch.load(Path(directory) / MODEL_FILE, map_location="cpu", weights_only=True))
        network.eval()
        instance.network = network
        return instance
