# foreman in a container. The usual home is the Mac beside Ollama (see README); this image is for a Linux host.
FROM oven/bun:1.4 AS build
WORKDIR /app
COPY package.json bun.lock ./
RUN bun install --frozen-lockfile
COPY tsconfig.json ./
COPY src ./src
COPY scripts ./scripts
RUN bun run build

FROM debian:bookworm-slim
COPY --from=build /app/dist/foreman /usr/local/bin/foreman
# Listen beyond the container; set FOREMAN_TOKEN, or foreman warns that anyone who can reach it can use it.
ENV FOREMAN_LISTEN=0.0.0.0:8080 \
    FOREMAN_DB=/data/foreman.db \
    FOREMAN_OLLAMA_URL=http://host.docker.internal:11434
VOLUME /data
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["foreman"]
CMD ["serve"]
