#!/usr/bin/env bash
# TEST-ONLY: proves the kcadm.sh steps of docs/keycloak-setup.md. Runs every ```sh block of that
# doc whose first line is `# kcadm: ...`, in order, against the running Keycloak `main`
# (scripts/keycloak start main), with REALM set to a scratch realm (default `steps`, deleted first
# if present), so the realm file's import and the manual steps can be compared
# (scripts/conformance --steps).
#
#   tests/conformance/setup-steps.sh [REALM]
set -euo pipefail
cd "$(dirname "$0")/../.."
realm=${1:-steps}
[ "$realm" != dev ] || { echo "setup-steps: refusing to rebuild realm dev" >&2; exit 2; }
home=$(ls -d target/keycloak/*-main 2>/dev/null | head -1)
[ -x "$home/bin/kcadm.sh" ] || { echo "setup-steps: no Keycloak under target/keycloak (scripts/keycloak start main)" >&2; exit 2; }
config=$PWD/target/keycloak/steps.kcadm.config

# The doc's blocks call `kcadm.sh`: this one, with a private config file.
kcadm.sh() { "$home/bin/kcadm.sh" "$@" --config "$config"; }

script=$(awk '
    /^```sh$/ { inblock = 1; first = 1; keep = 0; next }
    /^```$/   { inblock = 0; next }
    inblock && first { first = 0; keep = ($0 ~ /^# kcadm: /) }
    inblock && keep  { print }
' docs/keycloak-setup.md)
[ -n "$script" ] || { echo "setup-steps: no '# kcadm:' blocks found in docs/keycloak-setup.md" >&2; exit 2; }

# The login block first (it sets REALM=dev), then our realm.
eval "$(echo "$script" | sed -n '1,/^REALM=/p' | grep -v '^REALM=')"
REALM=$realm
if kcadm.sh get "realms/$REALM" >/dev/null 2>&1; then kcadm.sh delete "realms/$REALM"; fi
t0=$SECONDS
eval "$(echo "$script" | sed '1,/^REALM=/d')"
echo "setup-steps: realm $REALM built from docs/keycloak-setup.md in $((SECONDS - t0)) s"
