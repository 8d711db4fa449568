# collab in a container: `docker build -t collab .` then `docker compose up` (docker-compose.yml).
# Slim Python, a non-root user, the database on the /data volume, a health check on
# /healthz. The browser editor's built bundle ships in collab/web/dist (no Node here).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home collab \
    && mkdir -p /data && chown collab:collab /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY collab ./collab
RUN pip install '.[uvicorn]'

USER collab
VOLUME ["/data"]
ENV COLLAB_HOST=0.0.0.0 \
    COLLAB_PORT=1234 \
    COLLAB_DB=/data/collab.db
EXPOSE 1234

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('COLLAB_PORT', '1234'), timeout=2)"]

CMD ["collab", "serve", "--host", "0.0.0.0", "--db", "/data/collab.db"]
