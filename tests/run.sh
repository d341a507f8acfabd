#!/usr/bin/env bash
# The test command (README, .ci/run): on a fresh Debian machine it installs everything the tests need
# (Debian packages, a virtual environment with the project and its test extras), then runs ruff, mypy
# and the whole test suite. Arguments are passed on to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    mosquitto mosquitto-clients            # external MQTT broker for eventbus tests and the mqtt bench
    socat                                  # pty pairs for Modbus RTU tests
    dbus libdbus-1-dev libglib2.0-dev bluez  # private D-Bus + python-dbusmock's BlueZ for BLE tests
    podman runc busybox-static uidmap fuse-overlayfs slirp4netns containernetworking-plugins  # edged
    containerd                             # edged's CRI runtime
    iptables                               # cloudstream's DNAT of the nodes' kubelet port
)
missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "==> installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=""
for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info < (3, 14)))'; then
        PYTHON=$candidate; break
    fi
done
[ -n "$PYTHON" ] || { echo "tests/run.sh: need Python >=3.11,<3.14" >&2; exit 2; }

if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
echo "==> installing kubeedge and its test extras into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

echo "==> ruff"
.venv/bin/ruff check .
echo "==> mypy"
.venv/bin/mypy kernel plugins mappers
echo "==> pytest"
.venv/bin/pytest -q "$@"
