"""Offline checks of everything under deploy/ (no cluster, no container
engine, no network).

    python3 scripts/validate_deploy [--regen]

Each check is one function ``check_*(ctx) -> list[str]`` that returns the
problems it found (empty: passed), raises ``Skip`` when an optional tool is
absent, or ``MissingTool`` when a required one is. The modules:

- ``context``: ``Context`` (repository root, SPEC.md, temp dir, tools found on
  PATH or through PROMTOOL / SYSTEMD_ANALYZE / WSGATE_BIN / KUBECTL) and
  ``run`` for the external validators.
- ``metrics``: SPEC §8's metric list, PromQL name extraction, the SPEC table.
- ``prometheus``: promtool on the rules, their tests, the scrape config; the
  rules' and the dashboard's metric names against SPEC §8; the dashboard.
- ``kubernetes``: kustomizations, kubernetes-validate (strict), the Prometheus
  Operator resources, the generated PrometheusRule, ``kubectl kustomize``.
- ``contract``: the manifests against wsgate itself (probes, ports,
  securityContext, grace period vs shutdown timers, ConfigMap and Secret mounts).
- ``wsgate_config``: wsgate TOML configs (keys of config/example-full.toml,
  durations) and ``wsgate check``.
- ``systemd``, ``docker``: the unit (directives, ``systemd-analyze verify`` and
  ``security``) and the Dockerfile with .dockerignore.
- ``cli``: the list of checks in the order they run, ``main()``.

The ``test_*.py`` modules are their unit tests (standard-library unittest):

    python3 -m unittest discover -s scripts/validate_deploy -t scripts
"""
