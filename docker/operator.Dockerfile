# syntax=docker/dockerfile:1
# The Kafscale operator image.
#
#   docker build -f docker/operator.Dockerfile -t kafscale/operator:dev .        # from source
#   docker build -f docker/operator.Dockerfile --target prebuilt -t kafscale/operator:dev .
#       # copies dist/kafscale-operator instead of compiling
#
# Distroless, user 65532, nothing written at run time (the chart sets
# readOnlyRootFilesystem). The same binary installs the brokers' seccomp profile on
# the nodes (`kafscale-operator seccomp install`, the chart's DaemonSet).

# The toolchain the project is built and tested with (rustc 1.95); bookworm for
# glibc 2.36, as in the distroless base.
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
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
    cargo build --release --locked -p kafscale-operator \
 && mkdir -p /out \
 && strip -o /out/kafscale-operator target/release/kafscale-operator

FROM ${RUNTIME_BASE} AS base
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kafscale-operator"]
CMD ["run"]

FROM base AS prebuilt
COPY --chown=0:0 --chmod=0755 dist/kafscale-operator /usr/local/bin/kafscale-operator

FROM base AS runtime
COPY --from=build --chown=0:0 --chmod=0755 /out/kafscale-operator /usr/local/bin/kafscale-operator
