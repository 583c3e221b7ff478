#!/usr/bin/env bash
# Runs the whole livecast test suite. On a fresh Debian machine it first installs what the
# tests use as real peers (ffmpeg/ffprobe, Chromium, PostgreSQL with a Zabbix server and its
# API frontend, curl, nghttp2's h2load, and FFmpeg 9 from the imageio-ffmpeg wheel) and the pinned npm
# packages (hls.js for the player, playwright-core to drive Chromium). Needs root (or sudo for
# apt; the Zabbix test itself needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing+=(ffmpeg)
command -v chromium >/dev/null || missing+=(chromium)
command -v curl >/dev/null || missing+=(curl)
# nghttp2's h2load drives many HTTP/2 streams at the balancer in its tests.
command -v h2load >/dev/null || missing+=(nghttp2-client)
# A real Zabbix server (with PostgreSQL) receives the log shipper's values in its tests.
command -v pg_lsclusters >/dev/null || missing+=(postgresql)
[ -x /usr/sbin/zabbix_server ] || missing+=(zabbix-server-pgsql)
# Its API (the PHP frontend under PHP's built-in server) imports the shipped Zabbix template.
[ -f /usr/share/zabbix/api_jsonrpc.php ] || missing+=(zabbix-frontend-php)
php -m 2>/dev/null | grep -qx pgsql || missing+=(php-pgsql php-cli)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing test dependencies: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A modern FFmpeg (9, with libx265) publishes HEVC over Enhanced RTMP, which Debian's 5.1
# cannot; the imageio-ffmpeg wheel from PyPI carries one.
python3 -c "import imageio_ffmpeg" 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check "imageio-ffmpeg==0.8.1"

[ -d e2e/node_modules/playwright-core ] || npm ci --prefix e2e --no-audit --no-fund --loglevel=error
[ -f crates/livecast-web/player/node_modules/hls.js/dist/hls.min.js ] ||
  npm ci --prefix crates/livecast-web/player --no-audit --no-fund --loglevel=error
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked
# The Zabbix tests copy a database with Zabbix's schema; load it once, outside their time limits.
if [ "$(id -u)" -eq 0 ]; then
  scripts/zabbix-test-server.sh prepare
fi

exec cargo nextest run --workspace --profile ci "$@"
