#!/usr/bin/env bash
# Installs the tools that scripts/validate_deploy and tests/deploy.rs need:
#   promtool + prometheus (Debian package "prometheus"), systemd-analyze
#   (Debian package "systemd"), chromium (Debian package, for the status page
#   test), kubernetes-validate + PyYAML (PyPI); for SPEC §12 (tests/reach.rs,
#   tests/tail.rs): tinyproxy (HTTP CONNECT proxy), microsocks (SOCKS5 proxy),
#   and Python's websockets library (a Unix-socket WebSocket server).
# Idempotent and non-interactive: anything already present is skipped, so it is
# cheap to run at the start of every CI run. Needs root for apt-get (CI is root).
set -euo pipefail

log() { printf 'install-test-tools: %s\n' "$*" >&2; }

export DEBIAN_FRONTEND=noninteractive

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo -n"
    fi
fi

apt_packages=()
# promtool and prometheus both come from Debian's "prometheus" package.
if [ ! -x /usr/bin/promtool ] || [ ! -x /usr/bin/prometheus ]; then
    apt_packages+=(prometheus)
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
    apt_packages+=(systemd)
fi
# Headless Chromium renders the status page in tests/page.rs.
if [ ! -x /usr/bin/chromium ]; then
    apt_packages+=(chromium)
fi

# Real proxies for tests/reach.rs: tinyproxy (CONNECT) and microsocks (SOCKS5).
if ! command -v tinyproxy >/dev/null 2>&1; then
    apt_packages+=(tinyproxy)
fi
if ! command -v microsocks >/dev/null 2>&1; then
    apt_packages+=(microsocks)
fi

if [ "${#apt_packages[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get not found; install these by hand: ${apt_packages[*]}"
        exit 1
    fi
    # Update the package lists once per run, and only when something is missing.
    log "apt-get update"
    $SUDO apt-get update -qq
    log "apt-get install ${apt_packages[*]}"
    # --no-install-recommends: the prometheus package recommends exporters we do not need.
    $SUDO apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
    # Debian's prometheus package starts a system service where an init runs; the
    # tests start their own instance on a free loopback port, so nothing here needs it.
    # Debian's tinyproxy package starts a service on port 8888 of every interface;
    # the tests start their own on 127.0.0.1, so stop the packaged one.
    if [[ " ${apt_packages[*]} " == *" tinyproxy "* ]] && command -v service >/dev/null 2>&1; then
        $SUDO service tinyproxy stop >/dev/null 2>&1 || true
    fi
else
    log "prometheus, promtool and systemd-analyze already installed"
fi

PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    log "python3 not found"
    exit 1
fi
if "$PYTHON" -c 'import yaml, kubernetes_validate' >/dev/null 2>&1; then
    log "kubernetes-validate and PyYAML already installed"
else
    log "pip install kubernetes-validate PyYAML"
    pip_flags=(--quiet --disable-pip-version-check --no-input)
    # Debian's own python3 refuses system-wide installs (PEP 668) unless told.
    if "$PYTHON" -m pip install --help 2>/dev/null | grep -q -- '--break-system-packages'; then
        if [ -n "$(compgen -G '/usr/lib/python3*/EXTERNALLY-MANAGED')" ] && \
           [ "$(command -v "$PYTHON")" = "/usr/bin/python3" ]; then
            pip_flags+=(--break-system-packages)
        fi
    fi
    "$PYTHON" -m pip install "${pip_flags[@]}" kubernetes-validate PyYAML
fi

if "$PYTHON" -c 'import websockets' >/dev/null 2>&1; then
    log "websockets already installed"
else
    log "pip install websockets"
    pip_flags=(--quiet --disable-pip-version-check --no-input)
    if "$PYTHON" -m pip install --help 2>/dev/null | grep -q -- '--break-system-packages'; then
        if [ -n "$(compgen -G '/usr/lib/python3*/EXTERNALLY-MANAGED')" ] && \
           [ "$(command -v "$PYTHON")" = "/usr/bin/python3" ]; then
            pip_flags+=(--break-system-packages)
        fi
    fi
    "$PYTHON" -m pip install "${pip_flags[@]}" websockets
fi

# Report what is there, so a CI log shows the versions used.
/usr/bin/promtool --version 2>&1 | head -n1 | sed 's/^/install-test-tools: /' >&2
systemd-analyze --version | head -n1 | sed 's/^/install-test-tools: /' >&2
"$PYTHON" -c 'import kubernetes_validate, yaml; print("install-test-tools: kubernetes-validate OK, PyYAML", yaml.__version__)' >&2
tinyproxy -v 2>&1 | head -n1 | sed 's/^/install-test-tools: /' >&2 || true
command -v microsocks | sed 's/^/install-test-tools: microsocks at /' >&2 || true
"$PYTHON" -c 'import websockets; print("install-test-tools: websockets", websockets.__version__)' >&2
