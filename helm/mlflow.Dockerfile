# The MLflow tracking server for helm/mlflow.yaml. The official image has neither a PostgreSQL
# driver (backend store) nor boto3 (S3 artifact destination), so the server cannot start on ours.
#   docker build -f helm/mlflow.Dockerfile -t ghcr.io/intelligence-assets/intelligence-mlflow:3.17.2 helm
# Keep the version at the client's (mlflow in the code image) or newer: an older server lacks
# endpoints a newer client calls.
FROM ghcr.io/mlflow/mlflow:v3.17.2

RUN pip install --no-cache-dir psycopg2-binary boto3

# The base image runs as root; nothing the server writes needs it.
RUN useradd --uid 10001 --create-home mlflow
USER 10001
