#!/bin/bash
# One-time (idempotent) set-up of a Debian 12 machine for virtlife, as root:
# Debian packages when missing, the .venv with virtlife installed, then
# `virtlife lab setup` (KVM node permissions, virtlogd + libvirtd, test guest).
# As non-root or off Debian it only builds the venv and says so in one line.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS="libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
qemu-utils qemu-guest-agent libvirt-dev pkg-config busybox-static cpio e2fsprogs
novnc chromium postgresql"
# postgresql: the store's tests on PostgreSQL start a private cluster of their own with its
# initdb/pg_ctl (tests/pg_support.py); no system-wide service is started or needed.
# novnc: the browser's VNC console (served from /usr/share/novnc); chromium: the browser
# tests (Playwright drives /usr/bin/chromium). npm (xterm.js) is the machine's own Node.js
# one; only where there is none does Debian's come in.

real=1
if [ "$(id -u)" != 0 ] || [ ! -f /etc/debian_version ]; then
  real=0
  echo "setup: not root on Debian: skipping system packages and libvirtd (the demo uses libvirt's test driver)"
fi

if [ $real = 1 ]; then
  missing=""
  for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
  if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
  # the test guest's kernel comes from apt: its package lists must know it
  if ! apt-cache show --no-all-versions linux-image-cloud-amd64 >/dev/null 2>&1; then
    echo "setup: apt does not know linux-image-cloud-amd64 yet: apt-get update"
    apt-get update -qq
  fi
fi

stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: creating .venv and installing virtlife with its dev tools"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# xterm.js for the browser's serial console, from the npm registry (web/package-lock.json)
if command -v npm >/dev/null 2>&1; then
  lock_stamp="web/node_modules/.installed-$(sha256sum web/package-lock.json | cut -c1-16)"
  if [ ! -f "$lock_stamp" ]; then
    echo "setup: installing the web UI's front-end files (npm ci in web/)"
    (cd web && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    touch "$lock_stamp"
  fi
else
  echo "setup: npm not found: the web UI's serial console needs web/node_modules (npm ci in web/)"
fi

if [ $real = 1 ]; then
  .venv/bin/virtlife lab setup
fi
