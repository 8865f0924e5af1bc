# syntax=docker/dockerfile:1
# The Kafscale broker image.
#
#   docker build -f docker/broker.Dockerfile -t kafscale/broker:dev .            # from source
#   docker build -f docker/broker.Dockerfile --target prebuilt -t kafscale/broker:dev .
#       # copies dist/kafscale-broker (a release binary built on a glibc 2.36+
#       # machine, e.g. Debian 12) instead of compiling: what the image test uses
#
# The final image is distroless (glibc, libgcc, CA certificates, no shell), runs as
# the unprivileged user 65532 and writes nothing outside its data directory, so it
# runs with a read-only root filesystem. `kafscale-broker` is on PATH because the
# operator's preStop hook runs `kafscale-broker ctl drain` in the container.

# The toolchain the project is built and tested with (rustc 1.95); bookworm for
# glibc 2.36, as in the distroless base.
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# etcd-client's build script compiles etcd's gRPC schemas with an external protoc.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY codec codec
COPY segstore segstore
COPY proto proto
COPY broker broker
COPY bench bench
COPY operator operator
COPY third_party third_party
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kafscale-broker \
 && mkdir -p /out \
 && strip -o /out/kafscale-broker target/release/kafscale-broker

FROM ${RUNTIME_BASE} AS base
ENV KAFSCALE_DATA_DIR=/var/lib/kafscale \
    KAFSCALE_BROKER_ADDR=0.0.0.0:9092 \
    KAFSCALE_METRICS_ADDR=0.0.0.0:9093 \
    KAFSCALE_CONTROL_ADDR=127.0.0.1:9094
# 9092 Kafka, 9093 metrics/health/console; 9094 (control) stays on the loopback.
EXPOSE 9092 9093
# The data directory holds scratch state only (segments live in the object store);
# mount an emptyDir or tmpfs there when the root filesystem is read-only.
VOLUME ["/var/lib/kafscale"]
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kafscale-broker"]

FROM base AS prebuilt
COPY --chown=0:0 --chmod=0755 dist/kafscale-broker /usr/local/bin/kafscale-broker

FROM base AS runtime
COPY --from=build --chown=0:0 --chmod=0755 /out/kafscale-broker /usr/local/bin/kafscale-broker
