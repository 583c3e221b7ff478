#!/usr/bin/env bash
# Makes this Debian machine ready for the Docker tests (scripts/docker_test.py): installs
# Debian's Docker engine, docker-compose 1.29 and debootstrap when missing, starts dockerd when
# none answers, and makes the base images no registry can supply here:
#   debian:bookworm-slim   debootstrap --variant=minbase bookworm (about 30 s; the tarball is
#                          cached in $LIVECAST_DOCKER_CACHE, default /var/cache/livecast-docker)
#   livecast-test/tools    Debian's prometheus and python3 on top (scripts/docker/tools.Dockerfile)
# Images stay in Docker's store between runs. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${LIVECAST_DOCKER_CACHE:-/var/cache/livecast-docker}"

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd"
  mkdir -p /var/log
  nohup dockerd >/var/log/livecast-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 /var/log/livecast-dockerd.log; exit 1; }
fi

if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
  mkdir -p "$cache"
  if [ ! -s "$cache/bookworm-minbase.tar" ]; then
    echo "making debian:bookworm-slim with debootstrap"
    root="$(mktemp -d)"
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
    # What the official slim image leaves out: downloaded packages and package lists.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . >"$cache/bookworm-minbase.tar.part"
    mv "$cache/bookworm-minbase.tar.part" "$cache/bookworm-minbase.tar"
    rm -rf "$root"
  fi
  docker import "$cache/bookworm-minbase.tar" debian:bookworm-slim >/dev/null
fi

if ! docker image inspect livecast-test/tools:latest >/dev/null 2>&1; then
  echo "building livecast-test/tools"
  DOCKER_BUILDKIT=0 docker build -q -t livecast-test/tools:latest -f scripts/docker/tools.Dockerfile scripts/docker >/dev/null
fi
echo "docker ready in ${SECONDS} s: $(docker version --format "engine {{.Server.Version}}"), docker-compose $(docker-compose version --short)"
