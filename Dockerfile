# One image for every role: supervisor web, worker web and worker agent differ only in their environment
# variables and command (see compose.yaml and docs/deployment.md, "Docker Compose").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    APP_STORAGE_DIR=/app/storage

WORKDIR /app

# pg_dump and pg_restore carry applications' PostgreSQL databases when they move; they must be at least as new as
# the server (compose.yaml runs PostgreSQL 16), hence PostgreSQL's own Debian repository rather than Debian's.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && install -d /usr/share/postgresql-common/pgdg \
    && curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
        https://www.postgresql.org/media/keys/ACCC4CF8.asc \
    && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt $(. /etc/os-release && echo "$VERSION_CODENAME")-pgdg main" \
        > /etc/apt/sources.list.d/pgdg.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client-16 \
    && apt-get purge -y curl && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/*

COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . ./

# Not root. /app/storage belongs to the user, so a named volume mounted there starts out writable.
RUN useradd --create-home --uid 10001 appsup \
    && mkdir -p /app/storage \
    && chown appsup:appsup /app/storage
USER appsup

# Port 80 as a non-root user: Docker (20.10+) lets containers bind low ports by default; elsewhere pick a port
# above 1024 with `uvicorn --port`.
EXPOSE 80
CMD ["python", "-m", "supervisor_project.web", "--host", "0.0.0.0", "--port", "80"]
