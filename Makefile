# Two commands on a fresh machine: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# The CPU build of torch; the CUDA build belongs in the GPU image only.
IMAGE ?= localhost/intelligence-assets:dev
EXTRA ?= cpu
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check --constraint constraints/cpu.txt

.PHONY: install image image-test bench-image postgres chromium prometheus demo minio-demo test lint format ui mlflow-ui rollback audit housekeeping report tune-report bench bench-scale bench-storage bench-backfill bench-gpu-data profile clean-home

$(VENV)/.installed: pyproject.toml constraints/cpu.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing into $(VENV) (a few minutes on a fresh machine)..."
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) --editable '.[dev,cpu]'
	@touch $@

install: $(VENV)/.installed

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m intelligence_assets.cli.demo

# The `minio` deployment: artifacts in S3 (MinIO, or a stand-in on loopback), instance in PostgreSQL.
minio-demo: install
	bash scripts/minio_demo.sh

# The user-code image (podman, or docker), offline from wheelhouse/; IMAGE=<tag> EXTRA=gpu for the CUDA one.
image: install
	IMAGE=$(IMAGE) EXTRA=$(EXTRA) bash scripts/build_image.sh

# The image run as the `k8s` deployment runs it: code server, run and step pods (podman), against
# PostgreSQL, S3 (moto) and MLflow on loopback (intelligence_assets_tests/deployment).
image-test: image postgres
	INTELLIGENCE_IMAGE=$(IMAGE) $(BIN)/python -m pytest intelligence_assets_tests/deployment

# Debian's Chromium for the browser test (installed when missing).
chromium:
	@bash scripts/install_debian_package.sh chromium /usr/bin/chromium

# Debian's Prometheus for the metrics test (installed when missing).
prometheus:
	@bash scripts/install_debian_package.sh prometheus /usr/bin/prometheus

# PostgreSQL 15 on 127.0.0.1 for the instance-storage tests (installs the Debian package if missing).
postgres:
	@bash scripts/start_postgres.sh >/dev/null

test: install postgres chromium prometheus
	$(BIN)/python -m pytest -n 3 --dist loadfile

# Formatting and lint (ruff, configured in pyproject.toml); `make format` rewrites in place.
lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The webserver and the daemon (schedules, sensors, automation, run queue); pool limits from universe.yaml.
ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m intelligence_assets.cli.pools
	$(BIN)/dagster dev --host 127.0.0.1 --port 3000 --workspace workspace.yaml

# The MLflow UI on the embedded store (no server needed to train; this only browses it).
MLFLOW_UI_PORT ?= 5000
EMBEDDED_MLFLOW := $(or $(INTELLIGENCE_ARTIFACT_ROOT),$(DAGSTER_HOME)/artifacts)/mlflow
mlflow-ui: install
	@mkdir -p $(EMBEDDED_MLFLOW)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true $(BIN)/mlflow ui \
		--backend-store-uri sqlite:///$(abspath $(EMBEDDED_MLFLOW))/mlflow.db --host 127.0.0.1 --port $(MLFLOW_UI_PORT) --workers 1

# make rollback PARTITION='SP500|y_up_5b' REASON='live drawdown'
rollback: install
	$(BIN)/python -m intelligence_assets.cli.rollback --partition '$(PARTITION)' --reason '$(REASON)'

# Verify a trail: make audit MODEL='intelligence.SP500.y_up_5b@champion', or ASSET=features PARTITION=SP500
audit: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m intelligence_assets.cli.audit $(if $(MODEL),--model '$(MODEL)',--asset '$(ASSET)' $(if $(PARTITION),--partition '$(PARTITION)'))

# Retention and storage usage by hand: make housekeeping DRY_RUN=true DAYS_AHEAD=40
DRY_RUN ?= false
DAYS_AHEAD ?= 0
housekeeping: install $(DAGSTER_HOME)/dagster.yaml
	@printf 'ops: {checkpoint_retention: {config: {dry_run: %s, days_ahead: %s}}}\n' '$(DRY_RUN)' '$(DAYS_AHEAD)' > $(DAGSTER_HOME)/housekeeping_run.yaml
	$(BIN)/python -m intelligence_assets.cli.home --hold 'make housekeeping' -- \
		$(BIN)/dagster job execute -m intelligence_assets.definitions -j housekeeping_job -c $(DAGSTER_HOME)/housekeeping_run.yaml

# What the models from `make demo` are worth on the bundled real data: reports/report.md and PNGs.
COST_BPS ?= 5
report: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m intelligence_assets.cli.report --cost-bps $(COST_BPS)

# Does hyperparameter search pay off out of sample? Searched against configured params per family and
# symbol x target on `make demo`'s features, held-out rows, naive baselines: reports/tune_report.md.
TRIALS ?= 15
tune-report: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m intelligence_assets.cli.tune_report --trials $(TRIALS)

# Orchestration overhead: the same core work as a loop, an ideal pool and through Dagster; definitions
# load and backfill planning; peak RSS per step. Writes benchmarks/results/overhead.md and PNGs.
bench: install postgres
	$(BIN)/python -m benchmarks.overhead
	$(BIN)/python -m benchmarks.step_processes

# The same comparison with every family trained k times longer (more work per model; the same models,
# runs and events): where the overhead stops mattering. Writes benchmarks/results/overhead_scale.md and a PNG.
# Where a cold `make demo` spends its time (py-spy): benchmarks/results/profile.md.
profile: install
	$(BIN)/python -m benchmarks.profile_demo

bench-scale: install
	$(BIN)/python -m benchmarks.overhead_scale

bench-storage: install
	$(BIN)/python -m benchmarks.storage

# A backfill of PARTITIONS partitions per asset (synthetic symbols, linear family); appends to benchmarks/results/backfill.md.
PARTITIONS ?= 1000
bench-backfill: install
	$(BIN)/python -m benchmarks.backfill --partitions $(PARTITIONS)

# Image size, cold build and rebuild after a code-only change: benchmarks/results/images.md.
bench-image: install
	$(BIN)/python -m benchmarks.images

# The GPU benchmark's datasets (real pipeline, here); the run itself needs a GPU machine (README, "Benchmarks").
bench-gpu-data: install
	$(BIN)/python -m benchmarks.gpu prepare
	$(BIN)/python -m benchmarks.gpu_backfill prepare

clean-home:
	rm -rf $(DAGSTER_HOME)
