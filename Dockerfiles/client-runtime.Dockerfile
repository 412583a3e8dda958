# syntax=docker/dockerfile:1
# The client runtime: Deno plus client-runtime/ (main.ts, run.sh and
# deno-flags.txt, THE Deno command line). No user code is baked in: the
# manager mounts each version's module read-only at /code (a ConfigMap).
#   docker build -f Dockerfiles/client-runtime.Dockerfile -t skiff/client-runtime:0.1.0 .

# Deno from PyPI: the 2.9.8 binary the platform is measured and tested with.
FROM python:3.12.11-slim-bookworm AS deno
RUN pip install --no-cache-dir deno==2.9.8

# The sandbox launcher run.sh starts Deno through (Landlock and seccomp in the
# pod, on top of the pod's own RuntimeDefault profile).
FROM rust:1.95.0-slim-bookworm AS sandbox
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY core/Cargo.toml core/Cargo.toml
COPY manager/Cargo.toml manager/Cargo.toml
COPY router/Cargo.toml router/Cargo.toml
COPY cli/Cargo.toml cli/Cargo.toml
COPY sandbox sandbox
RUN mkdir -p core/src manager/src router/src cli/src \
 && touch core/src/lib.rs manager/src/lib.rs router/src/lib.rs \
 && for bin in manager router cli; do echo 'fn main() {}' > "$bin/src/main.rs"; done \
 && cargo build --release --locked -p skiff-sandbox \
 && cp target/release/skiff-sandbox /skiff-sandbox

# Debian slim, not distroless: run.sh needs a POSIX shell and dirname.
FROM debian:12.11-slim
RUN groupadd --system --gid 10001 skiff \
 && useradd --system --uid 10001 --gid skiff --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin skiff
COPY --from=deno /usr/local/bin/deno /usr/local/bin/deno
COPY --from=sandbox /skiff-sandbox /usr/local/bin/skiff-sandbox
COPY client-runtime/main.ts client-runtime/deno-flags.txt /opt/skiff/client-runtime/
COPY --chmod=0555 client-runtime/run.sh /opt/skiff/client-runtime/run.sh
# DENO_DIR is a writable emptyDir in the pod (the root filesystem is read-only).
ENV SKIFF_DENO=/usr/local/bin/deno \
    SKIFF_SANDBOX=/usr/local/bin/skiff-sandbox \
    DENO_DIR=/deno-dir \
    DENO_NO_UPDATE_CHECK=1 \
    NO_COLOR=1
USER 10001:10001
EXPOSE 8080 8081
# Kubernetes probes the runtime's own health port (GET :8081/healthz and
# /ready); a Docker health check would need a second Deno process.
HEALTHCHECK NONE
ENTRYPOINT ["/opt/skiff/client-runtime/run.sh"]
