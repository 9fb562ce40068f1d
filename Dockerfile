# A multi-stage build: compile in the Rust image, run in a small Debian image as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# SQLX_OFFLINE (in .cargo/config.toml) builds the query macros from .sqlx/: no database needed.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin abridge && cp target/release/abridge /usr/local/bin/abridge

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin abridge
COPY --from=build /usr/local/bin/abridge /usr/local/bin/abridge
USER abridge
# api, worker metrics (--metrics-listen), exporter: the ports docker-compose.yml and deploy/ use.
EXPOSE 8080 9464 9465
ENTRYPOINT ["abridge"]
CMD ["worker"]
