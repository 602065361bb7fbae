# The image deploy/k8s/llmobs.yaml runs: `docker build -t llmobs-tui .`
# `serve --store clickhouse://…` needs the clickhouse extra (the HTTP client); the TUI and the SQLite
# store need nothing more.
#
# Two stages: the wheel is built where a C compiler is, so that it carries the decoder's compiled
# attribute walk (store/_span_walk.c, hatch_build.py); the image that runs has no compiler.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md hatch_build.py ./
COPY llmobs_tui ./llmobs_tui
COPY receiver ./receiver
COPY store ./store
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/llmobs_tui-*.whl)[clickhouse]" && rm -rf /wheels \
    && python -c "from store import span_walk; assert span_walk.COMPILED, 'the compiled walk is missing'" \
    && useradd --create-home llmobs
USER llmobs
WORKDIR /home/llmobs
# 4317 OTLP/gRPC, 4318 OTLP/HTTP
EXPOSE 4317 4318
ENTRYPOINT ["llmobs-tui"]
CMD ["serve", "--host", "0.0.0.0"]
