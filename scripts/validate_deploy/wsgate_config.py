"""wsgate's own configs: config/wsgate.toml and the ConfigMap's, read as TOML
(keys, durations, shutdown timers) and handed to `wsgate check`."""

import re
import tomllib

from .context import WSGATE, Context, Invalid
from .manifests import all_manifests, describe

DEFAULT_CONFIG = "config/wsgate.toml"
# Lists every key wsgate knows: a key not in it is a typo or a stale name.
EXAMPLE_FULL = "config/example-full.toml"
# Free-form maps whose keys are data, not config keys.
FREE_FORM = {"headers"}


def duration_s(text: str) -> float:
    """Seconds in a humantime (or systemd) duration ("500ms", "5s", "1m30s",
    "2min", "2h"); ValueError for anything else."""
    units = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
    total, pos = 0.0, 0
    for m in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*(ms|min|s|m|h|d)", text):
        if m.start() != pos:
            raise ValueError(text)
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(text)
    return total


def key_paths(value, prefix: str = "") -> set:
    """Every key of a config as a dotted path, array tables as `name[]`."""
    out = set()
    if isinstance(value, dict):
        for k, v in value.items():
            p = f"{prefix}.{k}" if prefix else k
            out.add(p)
            if k not in FREE_FORM:
                out |= key_paths(v, p)
    elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        for x in value:
            out |= key_paths(x, prefix + "[]")
    return out


def parse_config(where: str, text: str) -> dict:
    """A wsgate TOML config; Invalid when it is not TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise Invalid(f"{where}: invalid TOML: {e}") from e


def unknown_keys(ctx: Context, where: str, cfg: dict) -> list[str]:
    known = key_paths(parse_config(EXAMPLE_FULL, ctx.read(EXAMPLE_FULL)))
    return [f"{where}: key {k!r} is not in {EXAMPLE_FULL}" for k in sorted(key_paths(cfg) - known)]


def shutdown_budget(cfg: dict) -> float:
    """Seconds wsgate may take to exit after SIGTERM: shutdown_delay + shutdown_timeout."""
    server = cfg.get("server") or {}
    return duration_s(server.get("shutdown_timeout", "10s")) + duration_s(server.get("shutdown_delay", "0s"))


def configmap_configs(ctx: Context) -> list[tuple[str, str, str]]:
    """(where, ConfigMap name + key, TOML text) of every *.toml key of every ConfigMap."""
    out = []
    for f, d in all_manifests(ctx):
        if d.get("kind") != "ConfigMap":
            continue
        for key, text in (d.get("data") or {}).items():
            if key.endswith(".toml"):
                out.append((f"{describe(ctx, f, d)} key {key}", f"{d['metadata']['name']}-{key}", text))
    return out


def check_config_keys(ctx: Context) -> list[str]:
    """config/wsgate.toml and every ConfigMap config use only keys of
    config/example-full.toml."""
    problems = unknown_keys(ctx, DEFAULT_CONFIG, parse_config(DEFAULT_CONFIG, ctx.read(DEFAULT_CONFIG)))
    for where, _, text in configmap_configs(ctx):
        problems += unknown_keys(ctx, where, parse_config(where, text))
    return problems


def wsgate_env(ctx: Context) -> dict:
    """The environment for `wsgate check`: a developer's WSGATE__* overrides
    must not change the config under test."""
    return {k: v for k, v in ctx.env.items() if not k.startswith("WSGATE__")}


def check_wsgate_default_config(ctx: Context) -> list[str]:
    """`wsgate check --config config/wsgate.toml` (opening the files it names)."""
    return ctx.run_problems([ctx.tool(WSGATE), "check", "--config", DEFAULT_CONFIG], env=wsgate_env(ctx))


def check_wsgate_configmaps(ctx: Context) -> list[str]:
    """`wsgate check --no-files` of every ConfigMap config: the files it names
    (Secret mounts) exist only in the pod."""
    wsgate = ctx.tool(WSGATE)
    configs = configmap_configs(ctx)
    if not configs:
        return ["deploy/kubernetes: no ConfigMap carries a wsgate config (*.toml key)"]
    problems = []
    for where, name, text in configs:
        path = ctx.tmp / f"configmap-{name}"
        path.write_text(text)
        argv = [wsgate, "check", "--no-files", "--config", path]
        problems += [f"{where}: {p}" for p in ctx.run_problems(argv, env=wsgate_env(ctx))]
    return problems
