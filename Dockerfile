# syntax=docker/dockerfile:1
#
# session-reaper container image.
#   docker build -t session-reaper:0.1.0 .
#   docker run --rm session-reaper:0.1.0 check-config
# See deploy/README.md. Not built in CI (no container engine there).

# ---- build stage -----------------------------------------------------------
# sqlx 0.9 needs Rust >= 1.94 (Cargo.toml rust-version); rust:1-bookworm tracks the latest 1.x.
FROM rust:1-bookworm AS builder
WORKDIR /src
# Build from the whole context (target/ and .git are excluded by .dockerignore)
# so that migrations/, config/, build scripts or sqlx offline data are present
# for compile-time embedding whatever the crate layout becomes. That includes the
# manifests of every workspace member (bench/, testkit/): cargo reads them all, even
# though only the daemon is built.
COPY . .
# If sqlx query macros are used, they must compile from checked-in offline data,
# never from a live database.
ENV SQLX_OFFLINE=true
# The cache mounts keep the crate registry and target/ between builds (BuildKit);
# the binary is copied out because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p session-reaper \
 && install -D -m 0755 target/release/session-reaper /out/session-reaper

# ---- runtime stage ---------------------------------------------------------
# Same Debian release as the builder, so the glibc the binary was linked against
# is present. TLS uses rustls with bundled webpki roots; ca-certificates is
# belt-and-braces (e.g. for a PostgreSQL server using a public CA).
FROM debian:bookworm-slim
# ca-certificates is deliberately unpinned: the newest CA bundle is the point.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin nonroot \
 && install -d -o 65532 -g 65532 -m 0700 /var/lib/session-reaper

COPY --from=builder /out/session-reaper /usr/local/bin/session-reaper

# STATE_DIRECTORY only changes the *default* database.url to
# sqlite:///var/lib/session-reaper/session-reaper.db (same rule as under systemd);
# a --config file or SESSION_REAPER_DATABASE__URL still wins. Mount a volume here
# to keep the SQLite file; in Kubernetes PostgreSQL is used instead.
ENV STATE_DIRECTORY=/var/lib/session-reaper
WORKDIR /var/lib/session-reaper
VOLUME ["/var/lib/session-reaper"]

# Optional health/metrics endpoint, enabled with SESSION_REAPER_HTTP__LISTEN=0.0.0.0:9187.
EXPOSE 9187
# The daemon stops gracefully on SIGTERM within shutdown.grace (default 20s):
# use `docker stop -t 30` or a longer Kubernetes terminationGracePeriodSeconds.
STOPSIGNAL SIGTERM

# The "nonroot" user (65532, same UID as distroless' nonroot). Numeric so that
# Kubernetes' runAsNonRoot can verify it without a runAsUser.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/session-reaper"]
CMD ["run"]
