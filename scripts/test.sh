#!/usr/bin/env bash
# The whole test suite: installs the test tools (promtool, prometheus,
# chromium, kubernetes-validate; idempotent, skipped when present), then runs
# every test. This is the README's test command and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-tools.sh
cargo test --all-targets "$@"
