"""docker.py: the Dockerfile and .dockerignore, read statically."""

from . import docker as d
from .fixture import TreeCase


class Docker(TreeCase):
    def test_shipped_files_pass(self):
        self.assertPasses(d.check_dockerfile)
        self.assertPasses(d.check_dockerignore)

    def test_root_user_fails(self):
        self.edit(d.DOCKERFILE, "USER ${UID}:${UID}", "USER 0")
        self.assertFinds(d.check_dockerfile, "USER is root")

    def test_user_by_name_fails(self):
        """runAsNonRoot can only verify a numeric USER."""
        self.edit(d.DOCKERFILE, "USER ${UID}:${UID}", "USER wsgate")
        self.assertFinds(d.check_dockerfile, "USER should be numeric")

    def test_shell_form_entrypoint_fails(self):
        self.edit(d.DOCKERFILE, 'ENTRYPOINT ["wsgate"]', "ENTRYPOINT wsgate")
        self.assertFinds(d.check_dockerfile, "ENTRYPOINT must use the exec (JSON) form")

    def test_copy_of_a_missing_file_fails(self):
        self.edit(d.DOCKERFILE, "COPY config/wsgate.toml", "COPY config/gateway.toml")
        self.assertFinds(d.check_dockerfile, "COPY source config/gateway.toml does not exist",
                         "config/wsgate.toml is not copied")

    def test_single_stage_fails(self):
        self.write(d.DOCKERFILE, "FROM debian:bookworm-slim\nENTRYPOINT [\"wsgate\"]\n")
        self.assertFinds(d.check_dockerfile, "not multi-stage")

    def test_dockerignore_fails_both_ways(self):
        """target/ must be out of the context, src in it."""
        self.edit(d.DOCKERIGNORE, "\ntarget/\n", "\nsrc/\n")
        self.assertFinds(d.check_dockerignore, ".dockerignore: target/ missing", "excludes src")
