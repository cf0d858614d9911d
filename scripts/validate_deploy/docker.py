"""deploy/docker/Dockerfile and .dockerignore, read statically (no container
engine): a multi-stage build of the locked release binary into a non-root
runtime image that runs `wsgate run --config /etc/wsgate/wsgate.toml`."""

import json
import re

from .context import Context

DOCKERFILE = "deploy/docker/Dockerfile"
DOCKERIGNORE = ".dockerignore"
BUILD_IMAGE = r"rust:1-slim-bookworm\s+AS\s+\w+"
RUNTIME_IMAGE = r"(debian:bookworm-slim|gcr\.io/distroless/cc-debian12:nonroot)$"
# Kept out of the build context: local build state.
IGNORED = ("target/", ".git", "fuzz/target/")
# Needed in the build context.
KEPT = ("src", "Cargo.toml", "Cargo.lock", "config")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    logical, cur = [], ""
    for line in text.splitlines():
        if not cur and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        cur += line
        if cur.strip():
            logical.append(cur.strip())
        cur = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in logical]


def check_dockerfile(ctx: Context) -> list[str]:
    """Stages, build command, ENTRYPOINT/CMD, EXPOSE, USER, HEALTHCHECK and
    COPY sources of the Dockerfile."""
    instr = instructions(ctx.read(DOCKERFILE))
    problems = []
    args = dict(rest.split("=", 1) for op, rest in instr if op == "ARG" and "=" in rest)

    def expand(s):
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), s)

    froms = [expand(r) for op, r in instr if op == "FROM"]
    if len(froms) < 2:
        return ["Dockerfile: not multi-stage"]
    if not re.match(BUILD_IMAGE, froms[0], re.I):
        problems.append(f"Dockerfile: build stage should be FROM rust:1-slim-bookworm AS ..., is {froms[0]}")
    elif not re.match(RUNTIME_IMAGE, froms[-1].split()[0]):
        problems.append("Dockerfile: runtime stage should be debian:bookworm-slim or distroless cc-debian12:nonroot,"
                        f" is {froms[-1]}")
    if "cargo build --release --locked" not in " ".join(r for op, r in instr if op == "RUN"):
        problems.append("Dockerfile: no `cargo build --release --locked`")
    last_stage = instr[max(i for i, (op, _) in enumerate(instr) if op == "FROM"):]

    def last(op):
        found = [r for o, r in last_stage if o == op]
        return found[-1] if found else None

    def exec_form(op):
        value = last(op)
        try:
            return json.loads(value) if value else None
        except json.JSONDecodeError:
            problems.append(f"Dockerfile: {op} must use the exec (JSON) form")
            return None

    if exec_form("ENTRYPOINT") != ["wsgate"]:
        problems.append('Dockerfile: ENTRYPOINT should be ["wsgate"]')
    if exec_form("CMD") != ["run", "--config", "/etc/wsgate/wsgate.toml"]:
        problems.append('Dockerfile: CMD should be ["run","--config","/etc/wsgate/wsgate.toml"]')
    if "9750" not in (last("EXPOSE") or "").split():
        problems.append("Dockerfile: EXPOSE 9750 missing")
    user = expand(last("USER") or "")
    uid = user.split(":")[0]
    if not uid.isdigit() and user != "nonroot":
        problems.append(f"Dockerfile: USER should be numeric (runAsNonRoot checks it), is {user!r}")
    elif uid.isdigit() and int(uid) == 0:
        problems.append("Dockerfile: USER is root")
    hc = last("HEALTHCHECK")
    if not hc:
        problems.append("Dockerfile: no HEALTHCHECK")
    elif "/healthz" not in hc:
        problems.append("Dockerfile: the HEALTHCHECK should GET /healthz")
    elif "distroless" in froms[-1] and "CMD-SHELL" not in hc and "/bin/" in hc:
        problems.append("Dockerfile: distroless has no shell for the HEALTHCHECK")
    copies = [r for op, r in last_stage if op == "COPY"]
    if not any(c.endswith("/usr/local/bin/wsgate") and "--from=" in c for c in copies):
        problems.append("Dockerfile: the binary is not copied to /usr/local/bin/wsgate")
    if not any(c.split()[-2:] == ["config/wsgate.toml", "/etc/wsgate/wsgate.toml"] for c in copies):
        problems.append("Dockerfile: config/wsgate.toml is not copied to /etc/wsgate/wsgate.toml")
    for op, rest in instr:
        if op == "COPY" and "--from=" not in rest:
            for src in rest.split()[:-1]:
                if not src.startswith("--") and src != "." and not ctx.path(src).exists():
                    problems.append(f"Dockerfile: COPY source {src} does not exist")
    return problems


def check_dockerignore(ctx: Context) -> list[str]:
    """.dockerignore keeps build state out and what the build needs in."""
    ignore = ctx.read(DOCKERIGNORE).split()
    problems = [f".dockerignore: {w} missing" for w in IGNORED if w not in ignore and w.rstrip("/") not in ignore]
    problems += [f".dockerignore: excludes {w}, which the build needs"
                 for w in KEPT if w in ignore or w + "/" in ignore]
    return problems
