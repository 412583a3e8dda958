# syntax=docker/dockerfile:1
# skiff-router and the sandbox launcher (used by the process runtime; in
# Kubernetes mode the router starts no process): built in the Rust image, run
# on distroless (glibc, CA roots, no shell, no package manager) as an
# unprivileged user.
#   docker build -f Dockerfiles/router.Dockerfile -t skiff/router:0.1.0 .
# (from the repository root; router.Dockerfile.dockerignore keeps target/ out)
# No SQLx offline data is needed: the code uses sqlx::query(), not the
# compile-time checked query! macros.

FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src

# 1) Dependencies only. The workspace manifests with empty sources: this
#    layer is rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
COPY core/Cargo.toml core/Cargo.toml
COPY manager/Cargo.toml manager/Cargo.toml
COPY router/Cargo.toml router/Cargo.toml
COPY cli/Cargo.toml cli/Cargo.toml
COPY sandbox/Cargo.toml sandbox/Cargo.toml
RUN mkdir -p core/src manager/src router/src cli/src sandbox/src \
 && touch core/src/lib.rs manager/src/lib.rs router/src/lib.rs sandbox/src/lib.rs \
 && for bin in manager router cli sandbox; do echo 'fn main() {}' > "$bin/src/main.rs"; done \
 && cargo build --release --locked -p skiff-router -p skiff-sandbox \
 && rm -rf core/src manager/src router/src cli/src sandbox/src

# 2) The workspace's own code (core embeds migrations/; the manager, a
#    workspace member, reads a client-runtime file at compile time).
COPY core core
COPY manager manager
COPY router router
COPY cli cli
COPY sandbox sandbox
COPY migrations migrations
COPY client-runtime client-runtime
# Forget the stub builds of the workspace crates so they are compiled again.
RUN rm -rf target/release/.fingerprint/skiff-* \
 && cargo build --release --locked -p skiff-router -p skiff-sandbox \
 && cp target/release/skiff-router target/release/skiff-sandbox /

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /skiff-router /skiff-sandbox /usr/local/bin/
ENV SKIFF_SANDBOX=/usr/local/bin/skiff-sandbox
# Same uid as the Kubernetes manifests (k8s/router.yaml) use.
USER 10001:10001
EXPOSE 8000
# Kubernetes probes GET /healthz (k8s/router.yaml); the image has no shell or
# HTTP client to run a Docker health check with.
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/skiff-router"]
