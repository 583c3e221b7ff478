#!/usr/bin/env bash
# Deploys a release made by scripts/release.sh to one target (the pipelines' last step):
#   scripts/deploy.sh compose IMAGE   over SSH to LIVECAST_DEPLOY_HOST (a checkout of this
#                                     repository in LIVECAST_DEPLOY_DIR): pull IMAGE, restart
#   scripts/deploy.sh k8s IMAGE       kubectl apply -k of LIVECAST_K8S_OVERLAY (default
#                                     deploy/k8s/overlays/example) with IMAGE and its version
#   scripts/deploy.sh aws TARBALL     upload to s3://LIVECAST_RELEASE_BUCKET, set the release
#                                     parameter (/livecast/release-version), then an instance
#                                     refresh of the front-ends: each new instance installs the
#                                     release and passes the launch check before it serves
# Every front-end refuses to become ready unless it runs this version, so a half-done
# deployment never serves a mixed audience from a wrong release.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
target="${1:-}"
artifact="${2:-}"
[ -n "$target" ] && [ -n "$artifact" ] || { echo "usage: scripts/deploy.sh compose|k8s IMAGE | aws TARBALL" >&2; exit 2; }

case "$target" in
  compose)
    : "${LIVECAST_DEPLOY_HOST:?the compose host (user@host)}"
    dir="${LIVECAST_DEPLOY_DIR:-livecast}"
    # The host keeps its own .env; the image and the expected version come from here.
    ssh -o BatchMode=yes "$LIVECAST_DEPLOY_HOST" \
      "cd '$dir' && git fetch --quiet && git checkout --quiet '$(git rev-parse HEAD)' &&
       export LIVECAST_IMAGE='$artifact' LIVECAST_EXPECT_VERSION='$version' &&
       docker compose pull ingest web proxy logship && docker compose up -d --remove-orphans"
    ;;
  k8s)
    overlay="${LIVECAST_K8S_OVERLAY:-deploy/k8s/overlays/example}"
    # A kustomization beside the overlay that sets the image and the expected version.
    release="$overlay/../.release"
    rm -rf "$release" && mkdir -p "$release"
    trap 'rm -rf "$release"' EXIT
    cat >"$release/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../$(basename "$overlay")
images:
  - name: ${LIVECAST_K8S_IMAGE_NAME:-registry.corp.example/livecast}
    newName: ${artifact%:*}
    newTag: ${artifact##*:}
configMapGenerator:
  - name: livecast-release
    behavior: replace
    literals:
      - version=$version
YAML
    kubectl apply -k "$release"
    kubectl -n "${LIVECAST_K8S_NAMESPACE:-livecast}" rollout status deployment/web --timeout=10m
    ;;
  aws)
    : "${LIVECAST_RELEASE_BUCKET:?the release bucket}"
    group="${LIVECAST_WEB_GROUP:-livecast-web}"
    aws s3 cp "$artifact" "s3://$LIVECAST_RELEASE_BUCKET/$(basename "$artifact")"
    aws ssm put-parameter --name "${LIVECAST_RELEASE_PARAMETER:-/livecast/release-version}" \
      --value "$version" --overwrite >/dev/null
    aws autoscaling start-instance-refresh --auto-scaling-group-name "$group" \
      --preferences '{"MinHealthyPercentage": 100, "MaxHealthyPercentage": 200}'
    ;;
  *)
    echo "unknown target $target: compose, k8s or aws" >&2
    exit 2
    ;;
esac
