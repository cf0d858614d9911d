"""deploy/systemd/wsgate.service: the hardening and timers we rely on, then
systemd's own `systemd-analyze verify` and `security --offline`."""

import re
import sys

from .context import SYSTEMD_ANALYZE, WSGATE, Context, Invalid, Skip
from .wsgate_config import DEFAULT_CONFIG, duration_s, parse_config, shutdown_budget

UNIT = "deploy/systemd/wsgate.service"
EXEC_START = "ExecStart=/usr/local/bin/wsgate"
# Exposure 0 (best) .. 10 (worst), in tenths for --threshold: keep it "OK" (< 2.0).
MAX_EXPOSURE_TENTHS = 20
REQUIRED = {
    "ExecStart": "/usr/local/bin/wsgate run --config /etc/wsgate/wsgate.toml",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "Restart": "on-failure",
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "SystemCallFilter": "@system-service",
}


def directives(unit: str) -> dict:
    """{key: [values in order]} of a unit file (sections ignored)."""
    out = {}
    for line in unit.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def check_unit_directives(ctx: Context) -> list[str]:
    """The unit runs wsgate as shipped, sandboxed, with a stop timeout above
    config/wsgate.toml's shutdown_delay + shutdown_timeout."""
    found = directives(ctx.read(UNIT))
    problems = [f"wsgate.service: expected {k}={v}" for k, v in REQUIRED.items() if v not in found.get(k, [])]
    if "ProcSubset" in found:
        problems.append("wsgate.service: ProcSubset=pid hides /proc/stat, which the process_* metrics need")
    stop = found.get("TimeoutStopSec", ["90s"])[-1]
    budget = max(shutdown_budget(parse_config(DEFAULT_CONFIG, ctx.read(DEFAULT_CONFIG))), 15)
    try:
        stop_s = duration_s(stop if re.search(r"[a-z]$", stop) else stop + "s")
    except ValueError:
        return problems + [f"wsgate.service: TimeoutStopSec={stop} is not a duration"]
    if not stop_s > budget:
        problems.append(f"wsgate.service: TimeoutStopSec={stop} must be above"
                        f" shutdown_delay + shutdown_timeout ({budget:g}s)")
    return problems


def unit_copy(ctx: Context):
    """A copy of the unit that systemd-analyze can check here: verify insists
    that ExecStart exists, so it runs $WSGATE_BIN when given, else this
    Python (any executable that surely exists)."""
    unit = ctx.read(UNIT)
    if EXEC_START not in unit:
        raise Invalid(f"{UNIT}: no {EXEC_START} line to point at an executable")
    try:
        binary = ctx.tool(WSGATE)
    except Skip:
        binary = sys.executable
    path = ctx.tmp / "wsgate.service"
    path.write_text(unit.replace(EXEC_START, f"ExecStart={binary}", 1))
    return path


def check_systemd_verify(ctx: Context) -> list[str]:
    """`systemd-analyze verify` exits 0 and has nothing to say."""
    analyze = ctx.tool(SYSTEMD_ANALYZE)
    done = ctx.run([analyze, "verify", unit_copy(ctx)])
    output = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if done.returncode != 0:
        output.append(f"systemd-analyze verify exited with status {done.returncode}")
    return output


def check_systemd_security(ctx: Context) -> list[str]:
    """`systemd-analyze security --offline` rates the unit's exposure below 2.0."""
    analyze = ctx.tool(SYSTEMD_ANALYZE)
    if "--offline" not in (ctx.run([analyze, "security", "--help"]).stdout or ""):
        raise Skip("systemd-analyze security --offline needs systemd >= 250")
    done = ctx.run([analyze, "security", "--offline=yes", f"--threshold={MAX_EXPOSURE_TENTHS}", "--no-pager",
                    unit_copy(ctx)])
    if done.returncode == 0:
        return []
    # stderr: why the unit could not be read; stdout: a table, then the score.
    score = [line for line in done.stdout.splitlines() if line.strip()][-1:]
    return [line for line in done.stderr.splitlines() if line.strip()] + score + [
        f"exposure above {MAX_EXPOSURE_TENTHS / 10:.1f}, or the unit could not be read (status {done.returncode})"
    ]
