# ccsync container images (docker/README.md tells how to run them).
#
#   docker build -t ccsync .                  production image: ccsyncd only (the last stage)
#   docker build --target ccsim -t ccsim .    the Constant Contact simulator, for the demo
#
# The Debian package lists below are the Makefile's DEB_BUILD_PKGS and DEB_RUNTIME_PKGS
# (`make -s print-deps`); tests/deploy/check.sh fails when they drift apart. Versions are
# not pinned on purpose: bookworm only ships security and bug fixes, which a rebuild should
# pick up. No secret is baked in: every token comes from the environment at run time.

# ---- build: the project's own Makefile, with the build packages --------------------------
FROM debian:bookworm-slim AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential pkg-config libmicrohttpd-dev libcurl4-openssl-dev libjson-c-dev \
      libhiredis-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# .dockerignore lets in only what `make all` reads (Makefile, include/, service/, tests/ccsim/),
# so editing tests, scripts or docs does not invalidate this layer.
COPY . .
RUN make -j"$(nproc)" BUILD=build all \
 && strip --strip-unneeded build/ccsyncd build/ccsim

# ---- base: what both run-time images share --------------------------------------------------
FROM debian:bookworm-slim AS base
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libmicrohttpd12 libcurl4 libjson-c5 libhiredis0.14 libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ccsync \
 && useradd --system --uid 10001 --gid ccsync --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin ccsync
# Numeric, so that orchestrators can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /

# ---- ccsim: the Constant Contact simulator (demo profile and tests only) --------------------
FROM base AS ccsim
COPY --from=build /src/build/ccsim /usr/local/bin/ccsim
EXPOSE 8090
STOPSIGNAL SIGTERM
CMD ["ccsim", "--listen", "0.0.0.0:8090"]

# ---- runtime: the production image, ccsyncd and nothing else (the default target) ----------
FROM base AS runtime
LABEL org.opencontainers.image.title="ccsync" \
      org.opencontainers.image.description="Keeps Constant Contact lists in step with Novi AMS groups" \
      org.opencontainers.image.licenses="UNLICENSED"
COPY --from=build /src/build/ccsyncd /usr/local/bin/ccsyncd
# Only non-secret settings; CCSYNC_REDIS_URL, CCSYNC_ADMIN_TOKEN and the Constant Contact
# credentials come from the environment the container is started with (docker/ccsync.env).
ENV CCSYNC_LISTEN=0.0.0.0:8080 \
    CCSYNC_LOG_FORMAT=json \
    CCSYNC_LOG_LEVEL=info
EXPOSE 8080
# ccsyncd stops accepting, hands back in-flight work and exits 0 within
# CCSYNC_SHUTDOWN_GRACE_SECONDS (25 s) of SIGTERM; compose waits longer (stop_grace_period).
STOPSIGNAL SIGTERM
# `ccsyncd --healthcheck` GETs http://127.0.0.1:<CCSYNC_LISTEN port>/readyz and exits 0 on 200,
# 1 otherwise: no curl in the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["ccsyncd", "--healthcheck"]
CMD ["ccsyncd"]
