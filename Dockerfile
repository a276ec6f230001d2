# syntax=docker/dockerfile:1
# celgate's container image. Build: docker build -t celgate:0.1.0 .
#
# Two stages: `build` resolves and installs the locked dependencies with uv; the final stage
# holds the virtualenv, the default config and policies, and nothing else. It runs as a fixed
# non-root UID and writes nothing outside /tmp and /var/lib/celgate, so it runs with a
# read-only root filesystem (the Helm chart mounts those two as volumes).

# Pinned Python base; the same tag in both stages, so the venv's interpreter link stays valid.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The uv version the Makefile pins.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first: this layer is reused until pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-dev --no-install-project
COPY README.md ./
COPY gateway ./gateway
# Install the project itself as a regular (non-editable) package: the source tree stays here.
RUN uv sync --locked --no-dev --no-editable

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="celgate" \
      org.opencontainers.image.description="Policy-as-code gRPC gateway for LLMs" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 celgate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin celgate \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/celgate /app/var
COPY --from=build /app/.venv /app/.venv
# The bundled config resolves `../policies` and `../var` against /app/config.
COPY config /app/config
COPY policies /app/policies
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /app
USER 10001:10001
EXPOSE 50051
ENTRYPOINT ["celgate"]
CMD ["serve", "--config", "/app/config/celgate.yaml"]
