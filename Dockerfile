# The user-code image (CPU): the code server, run pods and CPU step pods of the `k8s` deployment.
#   docker build -t ghcr.io/intelligence-assets/intelligence-assets:0.1.0 .
# GPU steps use Dockerfile.cuda instead.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home

WORKDIR /opt/intelligence-assets

# LightGBM and XGBoost load the system OpenMP runtime, which the slim image lacks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# The CPU build of torch first, from its own index: PyPI's default wheel carries CUDA (several GB).
# The constraint keeps the later install from replacing it.
COPY constraints/ constraints/
RUN pip install --constraint constraints/cpu.txt --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# Dependencies before the code, so that a code change does not reinstall them. Editable, as in the
# Makefile: the package finds data/universe.yaml beside itself (universe.REPOSITORY_ROOT), and the
# stub __init__ is replaced by the real package below.
COPY pyproject.toml README.md ./
RUN mkdir intelligence_assets && touch intelligence_assets/__init__.py \
    && pip install --constraint constraints/cpu.txt --editable ".[cpu]"

COPY intelligence_assets/ intelligence_assets/
COPY data/ data/
COPY workspace.yaml ./

# The chart mounts the instance's dagster.yaml into DAGSTER_HOME; the directory is ours so that
# Dagster can write beside it.
RUN useradd --uid 10001 --create-home --home-dir /home/dagster dagster \
    && mkdir -p "$DAGSTER_HOME" \
    && chown dagster "$DAGSTER_HOME"
USER 10001

EXPOSE 3030

# The Helm chart starts `dagster api grpc` with its own arguments and run/step pods run their own
# commands; this default serves the code location when the image is run by hand.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "3030", "-m", "intelligence_assets.definitions"]
