# The project's image: every process of the stack is `saga <command>` from this one image
# (docker-compose.yml picks the command). Data lives under /var/lib/saga, on volumes.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY . /src
RUN pip install /src && rm -rf /src

# An unprivileged user that owns the data folder: a new named volume mounted there starts
# with this ownership, so the gateway and the recovery daemon (same uid) share the log.
RUN useradd --system --uid 10001 --no-create-home --home-dir /var/lib/saga saga \
    && mkdir -p /var/lib/saga \
    && chown saga:saga /var/lib/saga
USER saga
WORKDIR /var/lib/saga
ENV SAGA_DATA_DIR=/var/lib/saga

ENTRYPOINT ["saga"]
CMD ["--help"]
