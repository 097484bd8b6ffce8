# Multi-stage build: compile in the Rust image, run in a small Debian image
# as a non-root user, with templates and configuration copied in.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY src src
COPY tests tests
RUN cargo build --release --locked --bin flatrender-notify

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin notify
WORKDIR /app
COPY --from=build /src/target/release/flatrender-notify /usr/local/bin/flatrender-notify
COPY templates templates
COPY config config
USER notify
ENV LOG_FORMAT=json
# The broker URL and secrets come from NOTIFY__* environment variables.
ENTRYPOINT ["flatrender-notify"]
CMD ["serve", "--config", "config/default.toml"]
