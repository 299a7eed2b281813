#!/usr/bin/env bash
# Install the system programs the tests use, only those missing: redis-server, mosquitto,
# chromium + chromedriver (browser tests, PNG/PDF export), pdftotext (PDF checks),
# PostgreSQL's server programs (the archive tests start a private cluster with initdb/pg_ctl),
# prometheus + promtool (tests/test_prometheus.py runs a real Prometheus against the roles).
# Debian/Ubuntu (apt-get). Run as root or with sudo available.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto mosquitto-clients)
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v pdftotext >/dev/null || need+=(poppler-utils)
command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || need+=(prometheus)
if [ ${#need[@]} -eq 0 ]; then
  echo "system deps: all present"
  exit 0
fi
echo "system deps: installing ${need[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
