# TEST ONLY: stands in for livekit/livekit-server:v1.13.5 with the same server version, built from
# its Go module (scripts/setup.sh). Like the real image: the server is the entrypoint, and wget is
# there for the Compose healthcheck.
FROM avatar-stack-test/debian:bookworm
LABEL org.opencontainers.image.description="TEST ONLY stand-in for livekit/livekit-server:v1.13.5; never push"
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends wget >/dev/null \
    && rm -rf /var/lib/apt/lists/*
COPY livekit-server /usr/local/bin/livekit-server
ENTRYPOINT ["livekit-server"]
