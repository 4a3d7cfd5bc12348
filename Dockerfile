# syntax=docker/dockerfile:1
# embed-worker image, CPU (default) or GPU:
#   docker build -t embed-worker:cpu .
#   docker build -t embed-worker:cuda --build-arg VARIANT=cuda .
# Both variants are Python 3.12 on python:3.12-slim-bookworm and install the versions pinned in
# constraints.txt (the ones `make install` and the tests use, torch included), with `-c constraints.txt`.
# The variant only picks the PyTorch wheel index: CPU wheels, or CUDA wheels (TORCH_CUDA, default cu130),
# which bundle the CUDA and cuDNN libraries; the host's NVIDIA container runtime supplies the driver.
# A model directory put under models/ is baked in at /models (see models/README.md); one can also
# be mounted there at run time. all-MiniLM-L6-v2 ships as a package unless BUNDLED_MODEL=false.
ARG VARIANT=cpu

# --- bases: one Python for both variants; the variant picks the torch wheels -----------------
FROM python:3.12-slim-bookworm AS base-cpu
ENV TORCH_INDEX=https://download.pytorch.org/whl/cpu

FROM python:3.12-slim-bookworm AS base-cuda
# PyTorch 2.13's CUDA builds: cu126 (older GPUs, down to Maxwell), cu130 (the PyPI default; needs a
# driver for CUDA 13, R580 or newer), cu132. The wheels carry CUDA and cuDNN (nvidia-* packages).
ARG TORCH_CUDA=cu130
ENV TORCH_INDEX=https://download.pytorch.org/whl/${TORCH_CUDA}
# What NVIDIA's CUDA base images set, so the container runtime mounts the driver's compute libraries
# (`docker run --gpus` and the Kubernetes device plugin still choose which GPUs are visible).
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# --- build: a virtual environment with torch, the package and its dependencies ---------------
# hadolint ignore=DL3006
FROM base-${VARIANT} AS build
ARG BUNDLED_MODEL=true
# the reference index sink's store (LanceDB): `embed-worker sink` and `query` in the same image
ARG SINK=true
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, each layer before the source: editing worker/ or loadgen/ reinstalls nothing.
# The pip cache is a BuildKit cache mount (not in the image): a rebuild after a constraints change
# reuses the wheels it already downloaded.
# torch, at the version constraints.txt pins (2.13.0 matches the index's 2.13.0+cpu / +cu130); PyPI
# stays an index for torch's own dependencies, and the index's local-labelled build sorts above PyPI's.
COPY constraints.txt ./
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    pip install -c constraints.txt --extra-index-url "${TORCH_INDEX}" torch
# The project's dependencies (and the chosen extras'), read from pyproject.toml, at the pinned versions.
COPY pyproject.toml ./
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    extras=""; \
    if [ "${BUNDLED_MODEL}" = "true" ]; then extras="bundled-model"; fi; \
    if [ "${SINK}" = "true" ]; then extras="${extras:+${extras},}sink"; fi; \
    python3 -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + [d for e in sys.argv[1].split(",") if e for d in p["optional-dependencies"][e]]))' "${extras}" > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt
# The project itself, without dependencies (all installed above); pip check: nothing is missing.
COPY README.md ./
COPY worker ./worker
COPY loadgen ./loadgen
RUN pip install --no-cache-dir --no-deps . && pip check

# --- runtime: the environment, the models, a non-root user -----------------------------------
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
COPY --from=build /opt/venv /opt/venv
COPY models /models
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin embed
# No HF_HUB_OFFLINE here: EMBED_MODEL__NAME may be a hub name. Set HF_HUB_OFFLINE=1 at run time when
# the model is a local path (the Helm chart does). HF_HOME: the hub's and tokenizers' cache, in /tmp
# (writable by uid 10001, and an emptyDir under the chart's read-only root filesystem).
ENV PATH=/opt/venv/bin:$PATH \
    HF_HOME=/tmp/hf \
    PYTHONUNBUFFERED=1 \
    EMBED_METRICS__PORT=9400
USER 10001
EXPOSE 9400
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('EMBED_METRICS__PORT', '9400') + '/healthz', timeout=4)"]
ENTRYPOINT ["embed-worker"]
CMD ["run"]
