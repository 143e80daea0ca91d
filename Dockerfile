# syntax=docker/dockerfile:1
# The one `ticketer` binary in a small image; the command picks what runs:
#   docker run IMAGE serve booking      one service (production backend)
#   docker run IMAGE migrate all        migrations ahead of a rollout
#   docker run -p 5000:5000 IMAGE dev   everything, embedded (SQLite under /data)
# Built with `docker build -t ticketer .` from the repository root.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Manifests first, so that source edits do not refetch the dependencies.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
# --locked: exactly the versions in Cargo.lock, or the build fails.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ticketer \
    && install -D target/release/ticketer /out/ticketer \
    && install -d /out/data

# glibc, libgcc and CA certificates, no shell, no package manager; runs as
# the image's unprivileged user (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ticketer /usr/local/bin/ticketer
COPY --from=build --chown=65532:65532 /out/data /data
ENV TICKETER_DATA_DIR=/data \
    LOG_FORMAT=json
USER 65532:65532
EXPOSE 5000 4040 4041 4042 5200 8082 8090
# Asks the service named by the container's command (or the gateway) for
# /health/live on its own port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/ticketer", "health"]
ENTRYPOINT ["/usr/local/bin/ticketer"]
CMD ["dev"]
