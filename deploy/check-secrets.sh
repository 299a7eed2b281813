#!/bin/sh
# Refuse to start VitalWatch with a missing, short or placeholder secret.
#   check-secrets.sh VAR [VAR...]      (reads each variable from the environment)
# docker compose runs it (service `preflight`) before every other service, and
# deploy/mosquitto/make-passwd.sh before hashing MQTT passwords. POSIX sh: runs in any image.
status=0
for name in "$@"; do
  eval "value=\${$name:-}"
  lower=$(printf '%s' "$value" | tr 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' 'abcdefghijklmnopqrstuvwxyz')
  if [ -z "$value" ]; then
    echo "refused: $name is not set (see deploy/env.example)" >&2; status=1; continue
  fi
  if [ "${#value}" -lt 16 ]; then
    echo "refused: $name is shorter than 16 characters (use e.g. openssl rand -base64 24)" >&2; status=1; continue
  fi
  case "$lower" in
    *change-me*|*changeme*|*change_me*|*password*|*secret*|*example*|*placeholder*|*xxxxxx*|*123456*)
      echo "refused: $name is a placeholder, not a password (use e.g. openssl rand -base64 24)" >&2; status=1 ;;
  esac
done
if [ "$status" -eq 0 ]; then echo "secrets OK: $*"; fi
exit "$status"
