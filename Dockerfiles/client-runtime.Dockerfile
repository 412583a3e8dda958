# syntax=docker/dockerfile:1
# The client runtime: Deno plus client-runtime/ (main.ts, run.sh and
# deno-flags.txt, THE Deno command line). No user code is baked in: the
# manager mounts each version's module read-only at /code (a ConfigMap).
#   docker build -f Dockerfiles/client-runtime.Dockerfile -t skiff/client-runtime:0.1.0 .

# Deno from PyPI: the 2.9.8 binary the platform is measured and tested with.
FROM python:3.12.11-slim-bookworm AS deno
RUN pip install --no-cache-dir deno==2.9.8

# Debian slim, not distroless: run.sh needs a POSIX shell and dirname.
FROM debian:12.11-slim
RUN groupadd --system --gid 10001 skiff \
 && useradd --system --uid 10001 --gid skiff --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin skiff
COPY --from=deno /usr/local/bin/deno /usr/local/bin/deno
COPY client-runtime/main.ts client-runtime/deno-flags.txt /opt/skiff/client-runtime/
COPY --chmod=0555 client-runtime/run.sh /opt/skiff/client-runtime/run.sh
# DENO_DIR is a writable emptyDir in the pod (the root filesystem is read-only).
ENV SKIFF_DENO=/usr/local/bin/deno \
    DENO_DIR=/deno-dir \
    DENO_NO_UPDATE_CHECK=1 \
    NO_COLOR=1
USER 10001:10001
EXPOSE 8080 8081
# Kubernetes probes the runtime's own health port (GET :8081/healthz and
# /ready); a Docker health check would need a second Deno process.
HEALTHCHECK NONE
ENTRYPOINT ["/opt/skiff/client-runtime/run.sh"]
