# TEST ONLY: stands in for coturn/coturn:4.6.3 with Debian 12's coturn (4.6.1). Like the real
# image it runs as nobody, turnserver may bind ports below 1024 all the same (its file capability,
# as the real image's Dockerfile sets it: TURN_TLS_PORT=443), and turnserver and
# turnutils_stunclient are on the PATH.
FROM avatar-stack-test/debian:bookworm
LABEL org.opencontainers.image.description="TEST ONLY stand-in for coturn/coturn:4.6.3; never push"
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends coturn libcap2-bin >/dev/null \
    && setcap CAP_NET_BIND_SERVICE=+ep /usr/bin/turnserver \
    && apt-get purge -y -qq libcap2-bin >/dev/null && rm -rf /var/lib/apt/lists/*
USER nobody:nogroup
