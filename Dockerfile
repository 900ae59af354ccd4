# Vouch: multi-stage build, non-root runtime, store on a volume.
#
#   docker build -t vouch .
#   docker run -v vouch-data:/var/lib/vouch -v $PWD/my-config:/etc/vouch:ro \
#     -e VOUCH_INGEST_TOKEN=... -p 8080:8080 vouch

FROM rust:1.85-slim-bookworm AS build
# jemalloc, Vouch's allocator, is built from its C sources with make.
RUN apt-get update \
 && apt-get install -y --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p vouch \
 && strip target/release/vouch

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/vouch --shell /usr/sbin/nologin vouch \
 && mkdir -p /var/lib/vouch /etc/vouch \
 && chown vouch:vouch /var/lib/vouch
COPY --from=build /src/target/release/vouch /usr/local/bin/vouch
# A starting configuration; mount your own over /etc/vouch.
COPY config/directory.example.toml /etc/vouch/directory.example.toml
COPY config/vouch.example.toml /etc/vouch/vouch.toml
RUN sed -i -e 's#^listen = .*#listen = "0.0.0.0:8080"#' -e 's#^data_dir = .*#data_dir = "/var/lib/vouch"#' /etc/vouch/vouch.toml
USER vouch
VOLUME ["/var/lib/vouch"]
EXPOSE 8080
# Vouch stops on SIGTERM: it stops taking requests, finishes those in flight and flushes the store.
STOPSIGNAL SIGTERM
ENTRYPOINT ["vouch", "run", "--config", "/etc/vouch/vouch.toml"]
