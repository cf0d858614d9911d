"""Linters over deploy/: hadolint on the Dockerfile, yamllint (strict, with
deploy/.yamllint.yml) on every YAML file."""

from .context import HADOLINT, YAMLLINT, Context

DOCKERFILE = "deploy/docker/Dockerfile"
YAMLLINT_CONFIG = "deploy/.yamllint.yml"


def check_hadolint(ctx: Context) -> list[str]:
    """hadolint finds nothing at its default threshold (info and above)."""
    return ctx.run_problems([ctx.tool(HADOLINT), "--no-color", DOCKERFILE])


def check_yamllint(ctx: Context) -> list[str]:
    """yamllint --strict: errors and warnings both fail."""
    return ctx.run_problems([ctx.tool(YAMLLINT), "--strict", "-f", "parsable", "-c", YAMLLINT_CONFIG, "deploy"])
