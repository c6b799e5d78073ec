# foreman in a container. The usual home is the Mac beside Ollama (see README); this image is for a Linux host.
FROM oven/bun:1.4 AS build
WORKDIR /app
COPY package.json bun.lock ./
RUN bun install --frozen-lockfile
COPY tsconfig.json ./
COPY src ./src
COPY scripts ./scripts
# The same build (and flags) as the executable the tests run.
RUN bun run build

FROM debian:bookworm-slim
# A user of its own: nothing runs as root. /data is made and owned before VOLUME, so a fresh named volume
# starts owned by foreman too (a bind mount keeps the host's owner: chown it to 10001, or run with --user).
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home --shell /usr/sbin/nologin foreman \
    && mkdir /data && chown foreman:foreman /data
COPY --from=build /app/dist/foreman /usr/local/bin/foreman
# Listen beyond the container; set FOREMAN_TOKEN, or foreman warns that anyone who can reach it can use it.
ENV FOREMAN_LISTEN=0.0.0.0:8080 \
    FOREMAN_DB=/data/foreman.db \
    FOREMAN_OLLAMA_URL=http://host.docker.internal:11434
VOLUME /data
WORKDIR /data
USER foreman
EXPOSE 8080
# `foreman health` GETs /healthz on FOREMAN_LISTEN's port (the image has no curl); /healthz needs no token.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["foreman", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["foreman"]
CMD ["serve"]
