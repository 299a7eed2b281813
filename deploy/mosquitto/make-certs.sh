#!/usr/bin/env bash
# A private CA and a server certificate for Mosquitto's TLS listener (port 8883), for
# clinics without their own PKI. Devices and gateways trust deploy/mosquitto/certs/ca.crt.
#   deploy/mosquitto/make-certs.sh mqtt.clinic.lan [more names or IPs...]
set -euo pipefail
cd "$(dirname "$0")/certs"
umask 077
name="${1:?usage: make-certs.sh HOSTNAME [ALT ...]}"
san="DNS:$name"
for alt in "${@:2}"; do
  if [[ "$alt" =~ ^[0-9.]+$ ]]; then san="$san,IP:$alt"; else san="$san,DNS:$alt"; fi
done
[ -f ca.key ] || openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -subj "/CN=VitalWatch MQTT CA" \
  -keyout ca.key -out ca.crt
openssl req -newkey rsa:3072 -nodes -subj "/CN=$name" -keyout server.key -out server.csr
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
  -extfile <(printf "subjectAltName=%s\nextendedKeyUsage=serverAuth" "$san") -out server.crt
rm -f server.csr
chmod 644 ca.crt server.crt
chmod 600 ca.key
chmod 640 server.key  # mosquitto reads it in its container (uid 1883): chown 1883 server.key
echo "wrote $(pwd)/server.crt (for $san) and ca.crt"
