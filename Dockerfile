# Minimal CPU image of the worker; the operations issue adds the CUDA variant, a baked-in model
# and a health check. Build: docker build -t embed-worker .
FROM python:3.11-slim

RUN useradd --create-home --uid 10001 embed
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY loadgen ./loadgen
# CPU torch from PyTorch's CPU index keeps the image small; the bundled model is the default.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch \
    && pip install --no-cache-dir ".[local]"

USER embed
ENV HF_HUB_OFFLINE=1
ENTRYPOINT ["embed-worker"]
CMD ["run"]
