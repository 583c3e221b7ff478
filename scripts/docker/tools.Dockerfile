# Test-only image for the Docker tests (scripts/docker_test.py): Debian's Prometheus, standing
# in for prom/prometheus (no image registry is reachable where the tests run), and Python for
# the Elasticsearch stand-in (scripts/harness.py). Built on the locally made debian:bookworm-slim.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus python3 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
