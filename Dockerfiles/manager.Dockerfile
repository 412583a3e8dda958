# syntax=docker/dockerfile:1
# skiff-manager, with the Deno binary it runs for deploy-time type checks and
# the sandbox launcher every check starts through. The same image runs the
# checker container of the manager's pod (`skiff-manager checker`).
# Runs on distroless (glibc and libgcc are all Deno needs) as an
# unprivileged user.
#   docker build -f Dockerfiles/manager.Dockerfile -t skiff/manager:0.1.0 .
# (from the repository root; manager.Dockerfile.dockerignore keeps target/ out)

# Deno from PyPI: the same 2.9.8 binary the client-runtime image carries.
FROM python:3.12.11-slim-bookworm AS deno
RUN pip install --no-cache-dir deno==2.9.8

FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
# 1) Dependencies only (see router.Dockerfile).
COPY Cargo.toml Cargo.lock ./
COPY core/Cargo.toml core/Cargo.toml
COPY manager/Cargo.toml manager/Cargo.toml
COPY router/Cargo.toml router/Cargo.toml
COPY cli/Cargo.toml cli/Cargo.toml
COPY sandbox/Cargo.toml sandbox/Cargo.toml
RUN mkdir -p core/src manager/src router/src cli/src sandbox/src \
 && touch core/src/lib.rs manager/src/lib.rs router/src/lib.rs sandbox/src/lib.rs \
 && for bin in manager router cli sandbox; do echo 'fn main() {}' > "$bin/src/main.rs"; done \
 && cargo build --release --locked -p skiff-manager -p skiff-sandbox \
 && rm -rf core/src manager/src router/src cli/src sandbox/src
# 2) The workspace's own code.
COPY core core
COPY manager manager
COPY router router
COPY cli cli
COPY sandbox sandbox
COPY migrations migrations
COPY client-runtime client-runtime
RUN rm -rf target/release/.fingerprint/skiff-* \
 && cargo build --release --locked -p skiff-manager -p skiff-sandbox \
 && cp target/release/skiff-manager target/release/skiff-sandbox /

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=deno /usr/local/bin/deno /usr/local/bin/deno
COPY --from=build /skiff-manager /skiff-sandbox /usr/local/bin/
ENV SKIFF_DENO=/usr/local/bin/deno \
    SKIFF_SANDBOX=/usr/local/bin/skiff-sandbox \
    DENO_NO_UPDATE_CHECK=1
# Same uid as the Kubernetes manifests (k8s/manager.yaml) use.
USER 10001:10001
EXPOSE 8080
# Kubernetes probes GET /healthz and /readyz (k8s/manager.yaml); the image has
# no shell or HTTP client to run a Docker health check with.
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/skiff-manager"]
CMD ["serve"]
