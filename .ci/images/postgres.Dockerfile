# CI only: PostgreSQL for compose.yaml's `postgres` service where no registry (and so no
# postgres:17 image) is in reach. Debian's PostgreSQL 15 on the locally built Debian base, with
# the part of the official image's interface compose.yaml uses: POSTGRES_USER, POSTGRES_PASSWORD
# and POSTGRES_DB create the cluster on first start, the data in /var/lib/postgresql/data.
ARG BASE_IMAGE=localhost/python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
