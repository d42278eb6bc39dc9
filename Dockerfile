# pyserver: a self-hosted Pusher Channels-compatible WebSocket server.
#
#   docker build -t pyserver .
#   docker run -p 6001:6001 -p 9601:9601 -e PYSERVER_APP_SECRET=my-long-random-secret pyserver
#   docker run -p 6001:6001 -v "$PWD/pyserver.toml:/etc/pyserver/pyserver.toml:ro" \
#       pyserver --config /etc/pyserver/pyserver.toml
#
# With the default secret (app-secret), the HTTP API and the console answer only requests
# from inside the container (protected mode, docs/configuration.md): set a secret.
#
# Every option can also be given as an environment variable, PYSERVER_<NAME>
# (e.g. -e PYSERVER_APP_KEY=my-key); see docs/configuration.md.

# --- build: install the package (the same `pip install .` as scripts/test.sh, minus the
# test extras, plus the drivers of the database app stores) into a virtual environment that
# the runtime stage copies as a whole, at the versions the tests last passed with
# (scripts/constraints.txt), so a new release of a dependency cannot change the image.
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY scripts/constraints.txt ./constraints.txt
COPY pyserver ./pyserver
RUN python -m venv /opt/pyserver \
    && /opt/pyserver/bin/pip install --no-cache-dir -c constraints.txt ".[postgres,mysql]"

# --- runtime: the interpreter, the virtual environment and an unprivileged user.
FROM python:3.11-slim

LABEL org.opencontainers.image.title="pyserver" \
      org.opencontainers.image.description="Self-hosted Pusher Channels-compatible WebSocket server" \
      org.opencontainers.image.licenses="MIT"

ENV PATH=/opt/pyserver/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd --system --gid 10001 pyserver \
    && useradd --system --uid 10001 --gid pyserver --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin pyserver \
    && mkdir -p /etc/pyserver

COPY --from=build /opt/pyserver /opt/pyserver

USER 10001:10001

# 6001: WebSocket (/app/{key}), HTTP API (/apps/{id}/...), /up and /ready.
# 9601: Prometheus metrics (/metrics).
EXPOSE 6001 9601

# Liveness through the server's own /up (slim has no curl). Follows PYSERVER_PORT, and
# speaks https when native TLS is on (PYSERVER_SSL_CERT; the certificate is not checked).
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request as u; tls = bool(os.environ.get('PYSERVER_SSL_CERT')); ctx = ssl._create_unverified_context() if tls else None; u.urlopen('%s://127.0.0.1:%s/up' % ('https' if tls else 'http', os.environ.get('PYSERVER_PORT', '6001')), timeout=4, context=ctx)"]

# SIGTERM (docker stop) drains: clients get 4200 and reconnect elsewhere within
# shutdown_grace (10 s); give `docker stop` / compose a longer timeout than that.
STOPSIGNAL SIGTERM

# `docker run IMAGE --config FILE` replaces only the arguments; the listen address
# defaults to 0.0.0.0 in the server itself, so a container is reachable either way.
ENTRYPOINT ["pyserver"]
CMD ["--host", "0.0.0.0"]
