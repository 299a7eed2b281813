#!/usr/bin/env bash
# Hash the MQTT passwords from .env (and one per device given as arguments) into
# deploy/mosquitto/passwd, using the mosquitto image's mosquitto_passwd.
#   deploy/mosquitto/make-passwd.sh oxi-1 nibp-1 ...   (prompts for each device password)
set -euo pipefail
cd "$(dirname "$0")/../.."
set -a; . ./.env; set +a
out=deploy/mosquitto/passwd
: > "$out"
run() { docker run --rm -i -v "$PWD/deploy/mosquitto:/m" eclipse-mosquitto:2 mosquitto_passwd "$@"; }
run -b /m/passwd vitalwatch-ingest "$MQTT_INGEST_PASSWORD"
run -b /m/passwd vitalwatch-alerts "$MQTT_ALERTS_PASSWORD"
run -b /m/passwd vitalwatch-simulate "$MQTT_SIMULATE_PASSWORD"
for dev in "$@"; do
  read -r -s -p "password for device $dev: " pw; echo
  run -b /m/passwd "$dev" "$pw"
done
echo "wrote $out"
