# One image with both services; docker-compose.yml picks the binary per container.
# Builds offline: no database is needed at build time (sqlx's .sqlx/ data is committed).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
ENV SQLX_OFFLINE=true CARGO_TERM_COLOR=never
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p orders -p payments \
 && install -m 0755 target/release/orders target/release/payments /usr/local/bin/

FROM debian:bookworm-slim AS run
# curl serves the compose healthchecks on /readyz.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /usr/local/bin/orders /usr/local/bin/payments /usr/local/bin/
USER app
ENV LOG_FORMAT=json RUST_LOG=info
# Both services stop gracefully on SIGTERM within 10 s.
STOPSIGNAL SIGTERM
CMD ["orders"]
