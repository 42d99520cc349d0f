# One image with both services; docker-compose.yml picks the binary per container.
# The last stage, `run`, is that image; `--target fake-ws-server` builds the standalone fake.
# Builds offline: no database is needed at build time (sqlx's .sqlx/ data is committed).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
ENV SQLX_OFFLINE=true CARGO_TERM_COLOR=never
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p orders -p payments \
 && install -m 0755 target/release/orders target/release/payments /usr/local/bin/

# The standalone fake WebSocket server (fake-ws-server-cli), to put in a compose file next
# to a service under test: `docker build --target fake-ws-server -t fake-ws-server .`.
# Its two stages come before `run`, which stays the last stage: the one `docker compose
# build` builds when a service names no target, so the services' image is unchanged (and
# BuildKit builds only the stages a target needs).
FROM rust:1.95-slim-bookworm AS fake-ws-server-build
WORKDIR /src
ENV SQLX_OFFLINE=true CARGO_TERM_COLOR=never
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p fake-ws-server-cli --bin fake-ws-server \
 && install -m 0755 target/release/fake-ws-server /usr/local/bin/

FROM debian:bookworm-slim AS fake-ws-server
# curl serves the healthcheck on the admin API.
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=fake-ws-server-build /usr/local/bin/fake-ws-server /usr/local/bin/
USER app
ENV RUST_LOG=info
# 8080: the fake's WebSocket (path `/` unless --path says otherwise); 8081: its admin API.
# A scenario file: mount it and add `--scenario /path` (compose's `command:` appends to
# the entrypoint), or set FAKE_WS_SCENARIO.
EXPOSE 8080 8081
HEALTHCHECK --interval=2s --timeout=2s --retries=15 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8081/connections"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["fake-ws-server", "--host", "0.0.0.0", "--port", "8080", "--admin-port", "8081"]

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
