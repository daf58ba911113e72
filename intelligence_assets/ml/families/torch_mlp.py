"""A small PyTorch multilayer perceptron, early-stopped on the validation loss.

Inputs are standardized with statistics of the training rows only (and, for regression, so
is the target); the statistics travel with the model. Training uses CUDA when visible;
prediction always runs on the CPU in float32, so a reloaded model predicts bit-identically.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from intelligence_assets.ml.families.base import ModelFamily, Task

MODEL_FILE = "model.pt"

DEFAULT_PARAMS: dict[str, Any] = {
    "hidden_sizes": [64, 32],
    "dropout": 0.1,
    "learning_rate": 1e-3,
    "weight_decay": 1e-4,
    "batch_size": 256,
    "max_epochs": 100,
    "patience": 10,
    "device": "auto",
    # CPU threads while fitting and predicting, restored afterwards; None leaves torch's
    # setting alone. One thread by default: matrices this small gain nothing from more, and
    # on two busy cores two spinning OpenMP threads made fits erratic, up to tenfold slower,
    # in measurements here.
    "num_threads": 1,
}

# Rows per forward pass at prediction time; fixed so that a prediction never depends on how
# many rows were asked for at once beyond this chunking.
PREDICT_CHUNK_ROWS = 65_536


def build_network(n_features: int, hidden_sizes: list[int], dropout: float) -> nn.Sequential:
    from torch import nn
    layers: list[nn.Module] = []
    width = n_features
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, int(hidden)), nn.ReLU(), nn.Dropout(float(dropout))]
        width = int(hidden)
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def build_network_without_init(n_features: int, hidden_sizes: list[int], dropout: float) -> nn.Sequential:
    """A network whose weights are about to be overwritten: its throwaway random init must not
    draw from (and so shift) the caller's global torch random state."""
    import torch
    with torch.random.fork_rng(devices=[]):
        return build_network(n_features, hidden_sizes, dropout)


def serving_network(network: nn.Module, feature_mean: np.ndarray, feature_std: np.ndarray, task: str, target_mean: float, target_std: float) -> nn.Module:
    """The network with its standardization and output transform inside, so that a tool calling
    `module(x)` on raw features gets what `TorchMLPFamily.predict` returns."""
    import torch
    from torch import nn

    class ServingNetwork(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network
            self.register_buffer("feature_mean", torch.as_tensor(feature_mean, dtype=torch.float64))
            self.register_buffer("feature_std", torch.as_tensor(feature_std, dtype=torch.float64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # Standardize in float64 then cast, as `predict` does.
            standardized = ((x.to(torch.float64) - self.feature_mean) / self.feature_std).to(torch.float32)
            output = self.network(standardized).squeeze(1)
            if task == "classification":
                return torch.sigmoid(output)
            return output.to(torch.float64) * target_std + target_mean

    return ServingNetwork().eval()


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


def standardization(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations (float64); a constant column gets std 1."""
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    std = np.where(std > 0.0, std, 1.0)
    return mean, std


def resolve_device(device: str) -> torch.device:
    import torch
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TorchMLPFamily(ModelFamily):
    name: ClassVar[str] = "torch_mlp"
    version: ClassVar[str] = "1"
    uses_gpu: ClassVar[bool] = True
    can_use_gpu: ClassVar[bool] = True

    def __init__(self, task: Task, params: dict[str, Any], seed: int) -> None:
        from torch import nn
        super().__init__(task, params, seed)
        self.network: nn.Sequential | None = None
        self.feature_mean: np.ndarray | None = None
        self.feature_std: np.ndarray | None = None
        self.target_mean = 0.0
        self.target_std = 1.0

    def _settings(self) -> dict[str, Any]:
        return DEFAULT_PARAMS | self.params

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray) -> Self:
        x_train, y_train, x_valid, y_valid = self._check_fit_inputs(x_train, y_train, x_valid, y_valid)
        with torch_threads(self._settings()["num_threads"]):
            self._fit(x_train, y_train, x_valid, y_valid)
        return self

    def _fit(self, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray) -> None:
        import torch
        from torch import nn
        settings = self._settings()
        device = resolve_device(str(settings["device"]))

        self.feature_mean, self.feature_std = standardization(x_train)
        if self.task == "regression":
            target_mean, target_std = standardization(y_train[:, None])
            self.target_mean, self.target_std = float(target_mean[0]), float(target_std[0])

        def as_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            features = torch.from_numpy(self._standardize(x)).to(device)
            target = (y - self.target_mean) / self.target_std if self.task == "regression" else y
            return features, torch.from_numpy(target.astype(np.float32)).to(device)

        train_x, train_y = as_tensors(x_train, y_train)
        valid_x, valid_y = as_tensors(x_valid, y_valid)
        loss_function: nn.Module = nn.BCEWithLogitsLoss() if self.task == "classification" else nn.MSELoss()

        # fork_rng keeps the seeding (weight init, dropout masks) from leaking into the caller's
        # global random state.
        rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(self.seed)
            network = build_network(train_x.shape[1], list(settings["hidden_sizes"]), settings["dropout"]).to(device)
            optimizer = torch.optim.AdamW(network.parameters(), lr=float(settings["learning_rate"]), weight_decay=float(settings["weight_decay"]))
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
                    loss = loss_function(network(train_x[batch]).squeeze(1), train_y[batch])
                    loss.backward()
                    optimizer.step()

                network.eval()
                with torch.no_grad():
                    validation_loss = float(loss_function(network(valid_x).squeeze(1), valid_y))
                self.training_curve.append(validation_loss)
                # The first epoch always counts, so a diverged (NaN) run still yields a model.
                if epoch == 1 or validation_loss < best_loss:
                    best_loss, best_epoch = validation_loss, epoch
                    best_state = {key: value.detach().to("cpu", copy=True) for key, value in network.state_dict().items()}
                elif epoch - best_epoch >= patience:
                    break

        self.best_iteration = best_epoch
        self.network = build_network_without_init(train_x.shape[1], list(settings["hidden_sizes"]), settings["dropout"])
        self.network.load_state_dict(best_state)
        self.network.eval()

    def _standardize(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.feature_mean) / self.feature_std).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        import torch
        x = self._check_predict_input(x)
        if self.network is None:
            raise RuntimeError("torch_mlp: predict called before fit (or load)")
        features = torch.from_numpy(self._standardize(x))
        outputs = []
        with torch_threads(self._settings()["num_threads"]), torch.no_grad():
            for start in range(0, features.shape[0], PREDICT_CHUNK_ROWS):
                output = self.network(features[start : start + PREDICT_CHUNK_ROWS]).squeeze(1)
                if self.task == "classification":
                    output = torch.sigmoid(output)
                outputs.append(output.numpy().astype(np.float64))
        prediction = np.concatenate(outputs)
        if self.task == "regression":
            prediction = prediction * self.target_std + self.target_mean
        return prediction

    def native_model(self) -> Any:
        if self.network is None:
            raise RuntimeError("torch_mlp: native_model called before fit")
        return serving_network(self.network, self.feature_mean, self.feature_std, self.task, self.target_mean, self.target_std)

    def save(self, directory: Path) -> None:
        import torch
        if self.network is None:
            raise RuntimeError("torch_mlp: save called before fit")
        directory = Path(directory)
        torch.save(self.network.state_dict(), directory / MODEL_FILE)
        settings = self._settings()
        self._write_meta(
            directory,
            architecture={"hidden_sizes": [int(size) for size in settings["hidden_sizes"]], "dropout": float(settings["dropout"])},
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
        architecture = meta["architecture"]
        network = build_network_without_init(instance.n_features, architecture["hidden_sizes"], architecture["dropout"])
        network.load_state_dict(torch.load(Path(directory) / MODEL_FILE, map_location="cpu", weights_only=True))
        network.eval()
        instance.network = network
        return instance


FAMILY = TorchMLPFamily
