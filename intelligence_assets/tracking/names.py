"""Names and tags shared by everything that reads or writes MLflow.

One experiment per target (`intelligence/<target>`): runs of every symbol and family for a
target sit side by side, which is the comparison a quant makes. One registered model per
symbol x target (`intelligence.<symbol>.<target>`): the registry answers "which model serves
this cell", so every family's versions compete under one name and the `champion` alias names
the winner (see README, "Registry").
"""

from __future__ import annotations

EXPERIMENT_PREFIX = "intelligence"
REGISTERED_MODEL_PREFIX = "intelligence"
# An MLflow search filter for the platform's registered models and their versions.
PLATFORM_MODELS_FILTER = f"name LIKE '{REGISTERED_MODEL_PREFIX}.%'"

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"
CHALLENGER = "challenger"
ALIASES = (CHAMPION, PREVIOUS_CHAMPION, CHALLENGER)

# Run tags (also the filter keys used to find a run again).
SYMBOL_TAG = "symbol"
TARGET_TAG = "target"
FAMILY_TAG = "family"
FINGERPRINT_TAG = "artifact_fingerprint"
ARTIFACT_URI_TAG = "artifact_uri"
DAGSTER_RUN_TAG = "dagster_run_id"
DAGSTER_ASSET_TAG = "dagster_asset_key"
DAGSTER_PARTITION_TAG = "dagster_partition_key"
CODE_VERSION_TAG = "code_version"
# The GPU a model trained on (index as the host numbers it, name, slot of `gpus.steps_per_gpu`);
# absent for models trained on the CPU.
GPU_INDEX_TAG = "gpu_index"
GPU_NAME_TAG = "gpu_name"
GPU_SLOT_TAG = "gpu_slot"
TRAINED_TAG = "trained"
REGISTERED_VERSION_TAG = "registered_version"
# sha256 of every file of the logged MLflow model, as JSON {path under `model/`: hex digest}; on the
# run and on its registered version. A version is served only when the files downloaded for it
# match, so a model file changed in the artifact store after training is refused, not served.
MODEL_SHA256_TAG = "model_sha256"
# On runs that are not a model (absent on model runs): a hyperparameter search and its trials sit in
# the target's experiment beside the models, and this tells them apart in filters.
RUN_KIND_TAG = "run_kind"
SEARCH_RUN_KIND = "hyperparameter_search"
TRIAL_RUN_KIND = "search_trial"
TRIAL_NUMBER_TAG = "trial_number"
TRIAL_STATE_TAG = "trial_state"

# Model version tags: held-out metrics as `heldout_<metric>` plus these.
HELDOUT_PREFIX = "heldout_"
TEST_ROWS_TAG = "test_rows"
TEST_START_TAG = "test_start"
TEST_END_TAG = "test_end"
ELIGIBLE_TAG = "eligible"
ROLLED_BACK_TAG = "rolled_back"
# On a champion that stopped serving without a rollback (model no longer current, symbol removed): when and why.
RETIRED_TAG = "retired"
ARCHIVED_TAG = "archived"
ARCHIVE_URI_TAG = "archive_uri"
ARCHIVED_AT_TAG = "archived_at"
# Set once the archive is written and verified, before any original is deleted: a retention run
# that crashed after that point finds the archive by this checksum instead of rebuilding it.
ARCHIVE_SHA256_TAG = "archive_sha256"
SCORE_TAG = "score"
SCORE_METRIC_TAG = "score_metric"

# Where retention keeps compressed model versions in the artifact store.
ARCHIVE_PREFIX = "archive"

MODEL_ARTIFACT_PATH = "model"
IMPORTANCE_CHART = "importance.svg"  # beside every model with a feature importance


def experiment_name(target: str) -> str:
    return f"{EXPERIMENT_PREFIX}/{target}"


def registered_model_name(symbol: str, target: str) -> str:
    """Symbols and targets may hold dots, so tools read the cell from the registered model's
    `symbol` and `target` tags, never by parsing this name."""
    return f"{REGISTERED_MODEL_PREFIX}.{symbol}.{target}"
