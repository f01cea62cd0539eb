# syntax=docker/dockerfile:1
# LLM gateway image: `gateway serve` by default, `gateway-exporter` from the same image.
#
#   docker build -t llm-gateway:0.1.0 .
#   docker run -p 8000:8000 -v "$PWD/gateway.yaml:/etc/gateway/gateway.yaml:ro" llm-gateway:0.1.0
#   docker run --entrypoint gateway-exporter llm-gateway:0.1.0 --config /etc/gateway/gateway.yaml
#
# PYTHON_IMAGE may point at any Debian-based image with python3 (>= 3.11) and its venv module;
# both stages must use the same one because the venv links to the base's interpreter.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- builder: resolve and install the project and its dependencies into /opt/venv ----------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
WORKDIR /src
# .dockerignore is an allow-list: only pyproject.toml, README.md and the packages arrive here.
COPY . .
# A non-editable install builds the project's wheel and installs it with its runtime
# dependencies only (no dev or bench extras), all from binary wheels.
RUN /opt/venv/bin/python -m pip install --no-cache-dir . \
    && /opt/venv/bin/python -m pip uninstall --yes pip \
    && /opt/venv/bin/gateway --help >/dev/null

# --- runtime: the venv, a default config, a non-root user; no compilers, no pip -----------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="llm-gateway" \
      org.opencontainers.image.description="OpenAI-compatible LLM gateway with OpenTelemetry traces over NATS" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000
# A fixed numeric uid/gid so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --gid 10001 gateway \
    && useradd --uid 10001 --gid gateway --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin gateway
COPY --from=builder /opt/venv /opt/venv
# Default config: no providers, embedded exporter. Mount your own over it (Kubernetes mounts the
# ConfigMap on /etc/gateway).
COPY docker/gateway.yaml /etc/gateway/gateway.yaml
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
# No curl in slim images: the interpreter does the probe.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('GATEWAY_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["gateway"]
CMD ["serve", "--config", "/etc/gateway/gateway.yaml"]
