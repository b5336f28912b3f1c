# dreamfix daemon: Rust toolchain + bubblewrap jail + Python service, the default model baked in at build time.
#   docker build -t dreamfix .
#   docker run -p 8000:8000 -v dreamfix-data:/data -e DREAMFIX_ADMIN_TOKEN=... dreamfix
# or `docker compose up` (docker-compose.yml: the daemon on PostgreSQL). bubblewrap needs user namespaces:
# run with --security-opt seccomp=unconfined (or a profile allowing clone with CLONE_NEWUSER) on hosts whose
# default seccomp profile forbids them.
#
# Layout: the model lives read-only in /opt/dreamfix/models (part of the image); /data is the declared volume
# for what the daemon writes (SQLite database unless DREAMFIX_DATABASE_URL names PostgreSQL, adapters,
# sandbox cache), so mounting it never hides the model.
FROM rust:1.95-slim-bookworm

# Debian stable's point releases replace these packages' versions; pinning them would break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python3-pip bubblewrap ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 dreamfix

ENV PATH=/opt/dreamfix/venv/bin:/usr/local/cargo/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies first (their layer survives source edits), then a normal (non-editable) install of the wheel:
# migrations and koans travel inside it as package data, so the sources are not kept in the image.
RUN python3 -m venv /opt/dreamfix/venv \
 && pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml setup.py MANIFEST.in README.md /src/
COPY agent /src/agent
COPY router /src/router
COPY learner /src/learner
COPY service /src/service
COPY migrations /src/migrations
COPY koans /src/koans
RUN pip install /src && rm -rf /src

# The default model, converted once into its own path; the downloaded chunks and GGUF are not kept.
RUN DREAMFIX_DATA_DIR=/opt/dreamfix dreamfix model pull \
 && rm -rf /opt/dreamfix/models/.downloads \
 && chmod -R a+rX /opt/dreamfix/models

RUN mkdir -p /data && chown 10001:10001 /data
VOLUME ["/data"]
ENV DREAMFIX_DATA_DIR=/data \
    DREAMFIX_MODEL=/opt/dreamfix/models/qwen2.5-coder-0.5b-instruct \
    DREAMFIX_HOST=0.0.0.0 \
    DREAMFIX_PORT=8000
USER 10001
WORKDIR /data

EXPOSE 8000
# Ready = the model is loaded and the database answers (/healthz only says the process is up).
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
  CMD ["python3", "-c", "import sys, urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status == 200 else 1)"]

# `serve` migrates once at start (under a PostgreSQL advisory lock, so replicas can start together).
CMD ["dreamfix", "serve"]
