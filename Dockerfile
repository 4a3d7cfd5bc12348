# syntax=docker/dockerfile:1
# embed-worker image, CPU (default) or GPU:
#   docker build -t embed-worker:cpu .
#   docker build -t embed-worker:cuda --build-arg VARIANT=cuda .
# A model directory put under models/ is baked in at /models (see models/README.md); one can also
# be mounted there at run time. all-MiniLM-L6-v2 ships as a package unless BUNDLED_MODEL=false.
ARG VARIANT=cpu

# --- bases: the runtime each variant needs ---------------------------------------------------
FROM python:3.12-slim-bookworm AS base-cpu
ENV TORCH_INDEX=https://download.pytorch.org/whl/cpu

FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 AS base-cuda
ENV TORCH_INDEX=https://download.pytorch.org/whl/cu124
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*

# --- build: a virtual environment with torch, the package and its dependencies ---------------
# hadolint ignore=DL3006
FROM base-${VARIANT} AS build
ARG TORCH_VERSION=2.5.1
ARG BUNDLED_MODEL=true
# the reference index sink's store (LanceDB): `embed-worker sink` and `query` in the same image
ARG SINK=true
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY loadgen ./loadgen
# the project itself, from this directory: its dependencies are bounded in pyproject.toml
# hadolint ignore=DL3013
RUN extras=""; \
    if [ "${BUNDLED_MODEL}" = "true" ]; then extras="bundled-model"; fi; \
    if [ "${SINK}" = "true" ]; then extras="${extras:+${extras},}sink"; fi; \
    pip install --no-cache-dir ".${extras:+[${extras}]}"

# --- runtime: the environment, the models, a non-root user -----------------------------------
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
COPY --from=build /opt/venv /opt/venv
COPY models /models
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin embed
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1 \
    EMBED_METRICS__PORT=9400
USER 10001
EXPOSE 9400
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('EMBED_METRICS__PORT', '9400') + '/healthz', timeout=4)"]
ENTRYPOINT ["embed-worker"]
CMD ["run"]
