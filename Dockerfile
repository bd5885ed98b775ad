# Conclave's image: docker-compose.yml runs the web, worker and beat services from it.

# Browser libraries come from the npm registry, as in bin/setup.
FROM node:20-bookworm-slim AS frontend
WORKDIR /app/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim-bookworm

# llama-cpp-python compiles llama.cpp from source. The default is a portable
# CPU build; a GPU worker image is built on a CUDA base with
# --build-arg CMAKE_ARGS=-DGGML_CUDA=on.
ARG CMAKE_ARGS=-DGGML_NATIVE=OFF
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CONCLAVE_DATA_DIR=/data \
    STATIC_ROOT=/app/staticfiles \
    WHITENOISE_USE_FINDERS=false

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, from the two pyproject.toml files alone (the platform and
# node/, the node package it depends on), so a code change does not
# recompile llama.cpp.
COPY pyproject.toml README.md ./
COPY node/pyproject.toml node/
RUN mkdir conclave node/conclave_node && touch conclave/__init__.py node/conclave_node/__init__.py \
    && CMAKE_ARGS="$CMAKE_ARGS" pip install ./node ".[candidates]" \
    && pip uninstall -y conclave conclave-node \
    && rm -rf conclave node build node/build

COPY . .
COPY --from=frontend /app/frontend/node_modules ./frontend/node_modules
RUN pip install --no-deps ./node . \
    && SECRET_KEY=build-only-not-secret CONCLAVE_DATA_DIR=/tmp/build-data \
       python manage.py collectstatic --noinput --verbosity 0 \
    && rm -rf /tmp/build-data build node/build

RUN useradd --system --home-dir /app conclave \
    && mkdir -p /data && chown conclave /data
USER conclave
VOLUME /data
EXPOSE 8000

CMD ["python", "manage.py", "up", "--no-worker", "--no-beat", "--host", "0.0.0.0", "--port", "8000"]
