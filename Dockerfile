# The image deploy/k8s/llmobs.yaml runs: `docker build -t llmobs-tui .`
# `serve --store clickhouse://…` needs the clickhouse extra (the HTTP client); the TUI and the SQLite
# store need nothing more.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY llmobs_tui ./llmobs_tui
COPY receiver ./receiver
COPY store ./store
RUN pip install --no-cache-dir '.[clickhouse]' && useradd --create-home llmobs
USER llmobs
WORKDIR /home/llmobs
# 4317 OTLP/gRPC, 4318 OTLP/HTTP
EXPOSE 4317 4318
ENTRYPOINT ["llmobs-tui"]
CMD ["serve", "--host", "0.0.0.0"]
