# syntax=docker/dockerfile:1
# The Pet Store image: a static host binary and its precompiled components
# on an empty base, run as UID/GID 65532, read-only, no shell.
#
#   podman build -t petstore:dev .        (see scripts/container-test)

# The build stage is pinned to the toolchain the repository pins
# (rust-toolchain.toml): rustc 1.95.0 on Debian 12, by digest (the tag is
# rebuilt when Debian's point releases land). scripts/container-test, which
# cannot pull, passes the local stand-in of the same name by tag.
# checkov:skip=CKV_DOCKER_7: the base image is ${RUST_IMAGE}, whose default here is a release tag and its digest; checkov does not resolve ARGs
ARG RUST_IMAGE=docker.io/library/rust:1.95.0-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1
FROM ${RUST_IMAGE} AS build
ENV CARGO_TERM_COLOR=never CARGO_TARGET_DIR=/build/target
WORKDIR /src
RUN rustup target add wasm32-wasip2 x86_64-unknown-linux-musl
COPY . .
# musl: one static binary, nothing to find at run time; the `dist` profile
# (fat LTO, one codegen unit: about 15% less CPU per GET than `release`,
# docs/performance.md). The cache mounts keep crates and compiled
# dependencies between builds on one machine.
RUN --mount=type=cache,id=petstore-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=petstore-cargo-target,target=/build/target \
    cargo build --locked --profile dist --target x86_64-unknown-linux-musl -p petstore-host --bin petstore \
 && CARGO_BUILD_FLAGS=--locked scripts/build-components --handlers-only /out/components \
 && mkdir -p /out/data \
 && cp /build/target/x86_64-unknown-linux-musl/dist/petstore /out/petstore \
 && strip /out/petstore \
 && COMPONENTS_DIR=/out/components /out/petstore compile \
 && chown -R 65532:65532 /out/data

# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK: the image runs on Kubernetes, which ignores it and probes /api/v1/health/live and /ready itself (k8s/base/deployment.yaml); the image has no shell or client to run one
FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="petstore" \
      org.opencontainers.image.description="The Pet Store service: a Rust host running Wasm components" \
      org.opencontainers.image.source="https://github.com/petstore/petstore" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build --chown=0:0 /out/petstore /app/petstore
COPY --from=build --chown=0:0 /out/components /app/components
COPY --from=build --chown=65532:65532 /out/data /data
ENV PORT=8080 \
    ADMIN_PORT=9090 \
    COMPONENTS_DIR=/app/components \
    DATABASE_URL=sqlite:///data/petstore.db \
    RUST_BACKTRACE=0
WORKDIR /data
USER 65532:65532
EXPOSE 8080 9090
VOLUME ["/data"]
# The host handles SIGTERM itself (it is PID 1 here).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/app/petstore"]
CMD ["serve"]
