# dreamfix daemon: Rust toolchain + bubblewrap jail + Python service, default model pulled at build time.
# Build: docker build -t dreamfix .   Run: docker run -p 8000:8000 -e DREAMFIX_ADMIN_TOKEN=... dreamfix
# bubblewrap needs user namespaces: run with --security-opt seccomp=unconfined (or a profile allowing clone
# with CLONE_NEWUSER) on hosts whose default seccomp profile forbids them.
FROM rust:1.95-slim-bookworm

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python3-pip bubblewrap make ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 dreamfix
WORKDIR /app
COPY --chown=dreamfix:dreamfix . /app

ENV VENV=/app/.venv \
    PATH=/app/.venv/bin:/usr/local/cargo/bin:$PATH \
    DREAMFIX_DATA_DIR=/home/dreamfix/.dreamfix \
    DREAMFIX_HOST=0.0.0.0 \
    DREAMFIX_PORT=8000

RUN python3 -m venv /app/.venv \
 && /app/.venv/bin/pip install --no-cache-dir --upgrade pip \
 && /app/.venv/bin/pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
 && /app/.venv/bin/pip install --no-cache-dir -e . \
 && chown -R dreamfix:dreamfix /app

USER dreamfix
RUN dreamfix model pull

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
  CMD python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"

CMD ["sh", "-c", "dreamfix db upgrade && exec dreamfix serve"]
