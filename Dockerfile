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
ENV LOG_FORMAT=json \
    NOTIFY__ADMIN__LISTEN=0.0.0.0:9464
EXPOSE 9464
# bash's /dev/tcp stands in for curl, which the slim image lacks.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# The broker URL and secrets come from NOTIFY__* environment variables.
ENTRYPOINT ["flatrender-notify"]
CMD ["serve", "--config", "config/default.toml"]
