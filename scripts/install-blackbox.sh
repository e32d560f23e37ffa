#!/usr/bin/env bash
# Install what the black-box conformance runs need (Debian 12, as root):
#
#   apt:  postfix (preseeded "No configuration": the system instance is never configured
#         or started; the harness runs private instances with `postfix -c DIR`),
#         chasquid, nftables (the namespace's standard-port DNAT, harness/world/ports.py),
#         iproute2 (`ip netns`), util-linux (`unshare`, rootless runs).
#   exim: Exim 4.96 (exim4-daemon-heavy: GnuTLS with DANE) for the exim-dane profile.
#         Debian's exim4 packages conflict with postfix (each is *the* system MTA), so
#         the package's libraries are installed with apt and its binary is unpacked from
#         the .deb as /usr/local/sbin/exim4, and the Debian-exim user is created; no
#         system Exim is configured or started. (On a machine without Postfix,
#         `apt-get install exim4-daemon-heavy` and stopping its service does as well.)
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
# The libraries exim4-daemon-heavy links against (apt-cache depends exim4-daemon-heavy).
exim_libs=(libgnutls-dane0 libgnutls30 libidn12 libidn2-0 libldap-2.5-0 libmariadb3 libnsl2
    libpam0g libpcre2-8-0 libperl5.36 libpq5 libsasl2-2 libspf2-2 libsqlite3-0 libdb5.3 libcrypt1)
for pkg in postfix chasquid nftables iproute2 util-linux "${exim_libs[@]}"; do
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

if ! command -v exim4 >/dev/null; then
    tmp="$(mktemp -d)"
    (cd "$tmp" && apt-get download -q exim4-daemon-heavy && dpkg-deb -x exim4-daemon-heavy_*.deb x)
    install -m 0755 "$tmp/x/usr/sbin/exim4" /usr/local/sbin/exim4
    rm -rf "$tmp"
fi
if ! getent passwd Debian-exim >/dev/null; then
    adduser --system --group --quiet --allow-bad-names --no-create-home \
        --home /var/spool/exim4 Debian-exim
fi

"$venv/bin/pip" install -q 'postfix-mta-sts-resolver>=1.4'

echo "install-blackbox: postfix $(postconf -d -h mail_version 2>/dev/null), chasquid $(dpkg-query -W -f='${Version}' chasquid), $(exim4 -bV 2>/dev/null | sed -n '1s/ #.*//p'), $("$venv/bin/pip" show postfix-mta-sts-resolver | sed -n 's/^Version: /postfix-mta-sts-resolver /p')"
