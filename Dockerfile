# syntax=docker/dockerfile:1
# The user-code image: the code server, run pods and step pods of the `k8s` deployment. One file
# for both builds; the GPU image differs only in its torch build and XGBoost wheel:
#   CPU: make image   (or: docker build -t ghcr.io/intelligence-assets/intelligence-assets:0.1.0 .)
#   GPU: docker build --build-arg TORCH_INDEX_URL=https://pypi.org/simple --build-arg EXTRA=gpu \
#          -t ghcr.io/intelligence-assets/intelligence-assets-cuda:0.1.0 .
# No CUDA base image is needed: PyPI's Linux torch wheel is the CUDA build and brings the CUDA
# runtime, cuDNN and NCCL as nvidia-* wheels; the node supplies only the driver.
#
# BASE_IMAGE: any Debian-based image with Python 3.11 (`make image` makes one with debootstrap
# when the public one cannot be pulled). OFFLINE=1 installs every Python package from
# wheelhouse/<EXTRA>/ (filled by `make image` with the constraints' exact versions), so the build
# needs no network inside the container.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG EXTRA=cpu
ARG OFFLINE=0

# NVIDIA_DRIVER_CAPABILITIES: the container toolkit mounts the driver's compute libraries (and
# nvidia-smi) only into images that ask; harmless where no GPU is.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

WORKDIR /opt/intelligence-assets

# LightGBM and XGBoost load the system OpenMP runtime, which slim images lack (a base made by
# `make image` has it already). A virtual environment: Debian's own Python refuses system-wide pip.
RUN if ! ldconfig -p | grep -q libgomp.so.1; then \
        apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv "$VIRTUAL_ENV"

# torch first, in its own layer (the largest), pinned by the constraints like everything else.
# The packages' own test suites and torch's C++ headers (for compiling extensions) are left out:
# about 300 MB that no step reads. The byte-code caches stay: a pod cannot write them (non-root)
# and would compile every module at each start.
COPY constraints/ constraints/
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    if [ "$OFFLINE" = 1 ]; then set -- --no-index --find-links "/wheelhouse/$EXTRA"; else set -- --index-url "$TORCH_INDEX_URL"; fi \
    && pip install "$@" --constraint constraints/cpu.txt torch==2.13.0 \
    && rm -rf "$VIRTUAL_ENV"/lib/python3.11/site-packages/torch/include \
    && find "$VIRTUAL_ENV" -depth -type d -name tests -exec rm -rf {} +

# Dependencies before the code, so that a code change does not reinstall them. Editable, as in the
# Makefile: the package finds data/universe.yaml beside itself (universe.REPOSITORY_ROOT), and the
# stub __init__ is replaced by the real package below. The README pyproject names is left empty:
# copying it here would reinstall every dependency at each edit of the manual.
COPY pyproject.toml ./
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    if [ "$OFFLINE" = 1 ]; then set -- --no-index --find-links "/wheelhouse/$EXTRA"; else set --; fi \
    && mkdir intelligence_assets && touch intelligence_assets/__init__.py README.md \
    && pip install "$@" --constraint constraints/cpu.txt --editable ".[$EXTRA]" \
    && find "$VIRTUAL_ENV" -depth -type d -name tests -exec rm -rf {} +

COPY intelligence_assets/ intelligence_assets/
COPY data/ data/
COPY workspace.yaml ./

# The chart mounts the instance's dagster.yaml into DAGSTER_HOME; the directory is ours so that
# Dagster can write beside it.
RUN useradd --uid 10001 --create-home --home-dir /home/dagster dagster \
    && mkdir -p "$DAGSTER_HOME" \
    && chown dagster "$DAGSTER_HOME"
USER 10001

# The commit this image holds (config/code_revision.py; an image has no .git). Last, so that a new
# commit changes only this layer.
ARG GIT_COMMIT=""
ARG GIT_DIRTY=false
# Podman (buildah) keys an ENV layer's cache on its text, not on the build arguments' values: a
# rebuild at a new commit with unchanged code kept the old commit. This RUN sees the values, so it
# misses the cache when they change, and every layer after it is built again.
RUN echo "code revision: ${GIT_COMMIT:-unknown} (uncommitted changes: $GIT_DIRTY)"
ENV INTELLIGENCE_GIT_COMMIT=$GIT_COMMIT \
    INTELLIGENCE_GIT_DIRTY=$GIT_DIRTY

EXPOSE 3030

# The Helm chart starts `dagster api grpc` with its own arguments and run/step pods run their own
# commands; this default serves the code location when the image is run by hand.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "3030", "-m", "intelligence_assets.definitions"]
