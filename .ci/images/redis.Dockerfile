# CI only: Redis for compose.yaml's `redis` service where no registry (and so no redis image)
# is in reach. Debian's Redis 7.0 on the locally built Debian base; the command compose.yaml
# gives (`redis-server --appendonly yes`) runs in /data, reachable from the compose network.
ARG BASE_IMAGE=localhost/python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server redis-tools \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
# As the official image: with no configuration file, listen on the container's network without
# protected mode (nothing outside the compose network reaches it).
ENTRYPOINT ["/bin/sh", "-c", "if [ \"$1\" = redis-server ]; then shift; exec redis-server --bind '*' --protected-mode no \"$@\"; fi; exec \"$@\"", "--"]
CMD ["redis-server"]
