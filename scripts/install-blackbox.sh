#!/usr/bin/env bash
# Install what the black-box conformance runs need (Debian 12, as root):
#
#   apt:  postfix (preseeded "No configuration": the system instance is never configured
#         or started; the harness runs private instances with `postfix -c DIR`),
#         chasquid, nftables (the namespace's standard-port DNAT, harness/world/ports.py),
#         iproute2 (`ip netns`).
#   pip:  postfix-mta-sts-resolver into the project's virtualenv (default .venv).
#
# Idempotent; safe to run twice. Usage: scripts/install-blackbox.sh [VENV]
set -euo pipefail

venv="${1:-.venv}"
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" != 0 ]; then
    echo "install-blackbox: needs root (apt-get)" >&2
    exit 1
fi

need=()
for pkg in postfix chasquid nftables iproute2; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done

if [ "${#need[@]}" -gt 0 ]; then
    # Preseed postfix so its postinst asks nothing and leaves /etc/postfix unconfigured.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    echo "postfix postfix/mailname string localhost" | debconf-set-selections
    # policy-rc.d 101: never start the packages' system services (we run private ones).
    cleanup_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        cleanup_policy=1
    fi
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need[@]}"
    if [ "$cleanup_policy" = 1 ]; then
        rm -f /usr/sbin/policy-rc.d
    fi
fi

"$venv/bin/pip" install -q 'postfix-mta-sts-resolver>=1.4'

echo "install-blackbox: postfix $(postconf -d -h mail_version 2>/dev/null), chasquid $(dpkg-query -W -f='${Version}' chasquid), $("$venv/bin/pip" show postfix-mta-sts-resolver | sed -n 's/^Version: /postfix-mta-sts-resolver /p')"
