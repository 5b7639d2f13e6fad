# One image for all three services; compose picks the process with `command`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependency layer: only the runtime lock, so code changes do not reinstall dependencies. Every
# package, transitive ones and the build backend included, is pinned with its sha256 hashes
# (`make lock`); --require-hashes refuses any file whose hash is not in the lock, and any
# dependency the lock does not pin.
COPY requirements/runtime.lock ./requirements/
RUN pip install --require-hashes -r requirements/runtime.lock

COPY pyproject.toml ./
COPY README.md ./
COPY native1api ./native1api
COPY rpc_common ./rpc_common
COPY vault_service ./vault_service
COPY gateway_service ./gateway_service
COPY rest_bridge ./rest_bridge
COPY fakes ./fakes
COPY devstack ./devstack
# The project itself: its dependencies are all installed above, and it builds with the locked
# setuptools (no build isolation, so nothing unhashed is downloaded).
RUN pip install --no-deps --no-build-isolation .
# The shipped limits file; compose's gateway reads /app/config/limits.toml (LIMITS_FILE).
COPY config ./config

# A fixed non-root user; /data holds the SQLite vault (a named volume in compose).
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin native1api \
    && mkdir -p /data && chown native1api /data
USER native1api
WORKDIR /data

EXPOSE 8080
CMD ["python", "-m", "rest_bridge"]
