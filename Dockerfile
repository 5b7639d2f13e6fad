# One image for all three services; compose picks the process with `command`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependency layer: only pyproject.toml, so code changes do not reinstall dependencies.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md ./
COPY native1api ./native1api
COPY rpc_common ./rpc_common
COPY vault_service ./vault_service
COPY gateway_service ./gateway_service
COPY rest_bridge ./rest_bridge
COPY fakes ./fakes
COPY devstack ./devstack
RUN pip install --no-deps .
# The shipped limits file; compose's gateway reads /app/config/limits.toml (LIMITS_FILE).
COPY config ./config

# A fixed non-root user; /data holds the SQLite vault (a named volume in compose).
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin native1api \
    && mkdir -p /data && chown native1api /data
USER native1api
WORKDIR /data

EXPOSE 8080
CMD ["python", "-m", "rest_bridge"]
