#!/usr/bin/env bash
# Builds what a deployment needs from this checkout, after the tests passed (.ci/run):
#   scripts/release.sh image      the image, tagged REGISTRY/livecast:VERSION-COMMIT and pushed
#                                 when LIVECAST_REGISTRY is set (docker login first)
#   scripts/release.sh tarball    target/release/livecast-VERSION-x86_64-linux.tar.gz: every
#                                 binary under bin/ and the lifecycle playbooks under ansible/
#                                 (what the AWS instances install)
# VERSION is the workspace's (what `livecast-* --version` prints; the AWS launch check and
# LIVECAST_EXPECT_VERSION compare it). Prints what it made, one line each.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
commit=$(git rev-parse --short=12 HEAD)

case "${1:-}" in
  image)
    name="${LIVECAST_REGISTRY:+$LIVECAST_REGISTRY/}livecast:$version-$commit"
    docker build -f deploy/docker/Dockerfile -t "$name" . >&2
    if [ -n "${LIVECAST_REGISTRY:-}" ]; then
      docker push "$name" >&2
    fi
    echo "$name"
    ;;
  tarball)
    cargo build --release --locked --workspace --bins >&2
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    mkdir -p "$stage/bin"
    for bin in livecast livecast-ingest livecast-web livecast-proxy livecast-logship livecast-loadtest; do
      install -m 0755 "target/release/$bin" "$stage/bin/"
    done
    cp -r deploy/aws/ansible "$stage/ansible"
    out="target/release/livecast-$version-x86_64-linux.tar.gz"
    tar -C "$stage" -czf "$out" bin ansible
    echo "$out"
    ;;
  *)
    echo "usage: scripts/release.sh image|tarball" >&2
    exit 2
    ;;
esac
