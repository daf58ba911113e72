"""Every family saved in its MLflow flavour predicts, through MLflow's pyfunc loader, what the
family itself predicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from intelligence_assets.ml.families import load_family
from intelligence_assets.tracking.flavours import load_pyfunc, pyfunc_predict, save_in_flavour

FEATURES = ["momentum", "volatility", "volume_z", "range"]
EXPECTED_FLAVOURS = {
    "lightgbm": "lightgbm",
    "xgboost": "xgboost",
    "torch_mlp": "pytorch",
    "torch_tcn": "pytorch",
    "linear": "python_function",
}


@pytest.mark.parametrize("family", sorted(EXPECTED_FLAVOURS))
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_flavour_predicts_what_the_family_predicts(
    family: str, task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    rng = np.random.default_rng(11)
    x = rng.normal(size=(900, len(FEATURES))) * np.array(
        [1.0, 5.0, 0.1, 30.0]
    )  # scales differ: standardization must travel
    signal = x[:, 0] - 0.2 * x[:, 1] + rng.normal(size=900)
    y = (signal > 0).astype(float) if task == "classification" else signal
    params = (
        {"num_boost_round": 40}
        if family in ("lightgbm", "xgboost")
        else {"max_epochs": 5}
        if family.startswith("torch")
        else {}
    )
    model = load_family(family)(task, params, 5).fit(x[:500], y[:500], x[500:650], y[500:650])

    flavour = save_in_flavour(model, FEATURES, tmp_path / "model")
    assert flavour == EXPECTED_FLAVOURS[family]
    assert (tmp_path / "model" / "MLmodel").exists()
    loaded = load_pyfunc(tmp_path / "model")
    assert loaded.metadata.get_input_schema().input_names() == FEATURES
    expected = model.predict(x[650:])
    # torch standardizes in float64 but runs the network in float32 either way.
    tolerance = 1e-6 if family.startswith("torch") else 1e-12
    np.testing.assert_allclose(
        pyfunc_predict(loaded, FEATURES, x[650:]),
        expected,
        rtol=0,
        atol=tolerance * max(1.0, float(np.abs(expected).max())),
    )
    if task == "classification":
        assert expected.min() >= 0.0 and expected.max() <= 1.0  # probabilities, not logits
