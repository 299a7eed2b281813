#!/usr/bin/env bash
# MQTT accounts for docker compose, from .env and config/compose.toml:
#   deploy/mosquitto/make-passwd.sh [--simulate] [device-id ...]
# - hashes the passwords of VitalWatch's own accounts (vitalwatch-ingest, vitalwatch-alerts)
#   and of each device named (prompted) into deploy/mosquitto/passwd;
# - --simulate also creates the simulator's account (vitalwatch-simulate, password
#   MQTT_SIMULATE_PASSWORD): only for installs that run the `simulate` profile (training);
# - writes deploy/mosquitto/acl from the config (`vitalwatch mqtt-acl`): each device may
#   publish only its own topics.
# Passwords that are empty, short or placeholders are refused (deploy/check-secrets.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
simulate=0
if [ "${1:-}" = "--simulate" ]; then simulate=1; shift; fi
set -a; . ./.env; set +a
secrets=(MQTT_INGEST_PASSWORD MQTT_ALERTS_PASSWORD)
[ "$simulate" = 1 ] && secrets+=(MQTT_SIMULATE_PASSWORD)
sh deploy/check-secrets.sh "${secrets[@]}"
out=deploy/mosquitto/passwd
: > "$out"
in_image() { docker run --rm -i -v "$PWD/deploy/mosquitto:/m" eclipse-mosquitto:2 "$@"; }
run() { in_image mosquitto_passwd "$@"; }
run -b /m/passwd vitalwatch-ingest "$MQTT_INGEST_PASSWORD"
run -b /m/passwd vitalwatch-alerts "$MQTT_ALERTS_PASSWORD"
if [ "$simulate" = 1 ]; then run -b /m/passwd vitalwatch-simulate "$MQTT_SIMULATE_PASSWORD"; fi
for dev in "$@"; do
  read -r -s -p "password for device $dev: " pw; echo
  DEVICE_PASSWORD="$pw" sh deploy/check-secrets.sh DEVICE_PASSWORD
  run -b /m/passwd "$dev" "$pw"
done
acl_args=(mqtt-acl -c /app/config/compose.toml)
[ "$simulate" = 1 ] && acl_args+=(--simulate)
docker compose run --rm --no-deps -T ingest "${acl_args[@]}" > deploy/mosquitto/acl
# readable by the broker's user in its container (uid 1883) and by nobody else
in_image sh -c 'chown 1883:1883 /m/passwd && chmod 600 /m/passwd'
echo "wrote $out and deploy/mosquitto/acl"
