# TEST ONLY: stands in for node:22.21.1-bookworm-slim (the web stage's base), which cannot be
# pulled here. Node's binary and npm come from the npm registry (prepare.sh fetches them).
FROM avatar-stack-test/debian:bookworm
LABEL org.opencontainers.image.description="TEST ONLY stand-in for node:22.21.1-bookworm-slim; never push"
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
    && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
    && node --version && npm --version
