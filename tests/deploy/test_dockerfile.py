"""The Dockerfile and .dockerignore, checked statically (no Docker engine here), plus the
image's HEALTHCHECK command run for real against a local HTTP server."""

from __future__ import annotations

import http.server
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.deploy.support import ROOT

pytestmark = pytest.mark.deploy

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(instruction)
    return out


def runtime() -> list[tuple[str, str]]:
    return stages()[-1]


def test_multi_stage_build_with_uv_from_pypi() -> None:
    build, final = stages()[0], runtime()
    assert len(stages()) >= 2
    assert re.search(r"\bAS build\b", build[0][1])
    assert any(i == "RUN" and re.search(r"pip install .*\buv\b", a) for i, a in build)
    assert not any(i == "RUN" and "uv " in a for i, a in final), "no uv in the runtime stage"


def test_dependencies_come_from_the_lock_file() -> None:
    copies = " ".join(a for i, a in instructions() if i == "COPY")
    assert "uv.lock" in copies
    syncs = [a for i, a in stages()[0] if i == "RUN" and "uv sync" in a]
    assert syncs
    for sync in syncs:
        assert {"--frozen", "--no-dev", "--no-editable"} <= set(sync.split()), sync
    env = " ".join(a for i, a in stages()[0] if i == "ENV")
    assert "UV_PROJECT_ENVIRONMENT=/app/.venv" in env


def test_variables_are_declared_in_the_stage_that_uses_them() -> None:
    """An ARG given before FROM is visible only in FROM lines: used inside a stage without
    being declared again, it silently expands to an empty string."""
    for stage in stages():
        declared = {"PATH"}  # from the base image
        for instruction, args in stage[1:]:
            if instruction in ("ARG", "ENV"):
                declared.update(re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", args))
            used = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", args))
            assert used <= declared, f"{instruction} {args}: {used - declared} not declared"


def test_runtime_stage_gets_only_the_venv() -> None:
    copies = [a for i, a in runtime() if i == "COPY"]
    assert copies == ["--from=build /app/.venv /app/.venv"]


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [a for i, a in runtime() if i == "USER"]
    assert users, "the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    # Numeric: Kubernetes' runAsNonRoot can only verify a numeric user.
    assert uid.isdigit() and int(uid) != 0
    chart_values = (ROOT / "deploy/k8s/notify/values.yaml").read_text()
    assert f"runAsUser: {uid}" in chart_values, "the chart runs the pods as the image's user"


def test_no_secret_or_setting_is_baked_in() -> None:
    for instruction, args in instructions():
        if instruction in ("ENV", "ARG"):
            assert "NOTIFY_" not in args, "settings come from the environment at run time"
            assert not re.search(r"(SECRET|PASSWORD|TOKEN|PRIVATE)", args, re.I), args


def healthcheck_command() -> list[str]:
    (args,) = [a for i, a in runtime() if i == "HEALTHCHECK"]
    _, _, command = args.partition("CMD ")
    return shlex.split(command)


def test_healthcheck_probes_healthz_on_the_configured_port() -> None:
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"]
    assert "/healthz" in command[2] and "HEALTHCHECK_PORT" in command[2]
    env = " ".join(a for i, a in runtime() if i == "ENV")
    assert "HEALTHCHECK_PORT=8000" in env


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_command_reports_the_service_state(
    health_server: http.server.HTTPServer, status: int, healthy: bool
) -> None:
    _Health.status = status
    _, code = healthcheck_command()[1:]
    port = str(health_server.server_address[1])
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "HEALTHCHECK_PORT": port},
        capture_output=True,
        timeout=10,
    )
    assert (result.returncode == 0) == healthy, result.stderr


def test_healthcheck_fails_when_nothing_listens(health_server: http.server.HTTPServer) -> None:
    port = health_server.server_address[1]
    health_server.shutdown()
    health_server.server_close()
    _, code = healthcheck_command()[1:]
    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "HEALTHCHECK_PORT": str(port)}, timeout=10
    )
    assert result.returncode != 0


# --- .dockerignore ---------------------------------------------------------------------------


def _pattern(pattern: str) -> re.Pattern[str]:
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            regex += ".*"
            i += 2
        elif pattern[i] == "*":
            regex += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            regex += "[^/]"
            i += 1
        else:
            regex += re.escape(pattern[i])
            i += 1
    # A pattern matching a directory excludes everything below it.
    return re.compile(regex + "(?:/.*)?")


def ignored(path: str) -> bool:
    """Docker's rule: the last matching line wins; `!` re-includes."""
    result = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if _pattern(pattern).fullmatch(path):
            result = not negate
    return result


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "uv.lock",
        "schemas/topics/notify.users.v1.yaml",
        "schemas/src/notify_schemas/models.py",
        "libs/common/pyproject.toml",
        "libs/common/src/notify_common/db/migrations/env.py",
        "services/ingest/pyproject.toml",
        "services/fanout/src/notify_fanout/app.py",
    ],
)
def test_build_context_keeps_the_sources(path: str) -> None:
    assert (ROOT / path).exists()
    assert not ignored(path)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        ".state/secrets.json",
        "render/default/all.yaml",
        "libs/common/tests/test_settings.py",
        "services/ingest/src/notify_ingest/__pycache__/app.cpython-311.pyc",
        ".env",
        "services/inbox/.env",
        "deploy/k8s/notify/values.yaml",
    ],
)
def test_build_context_leaves_out_local_state(path: str) -> None:
    assert ignored(path)


def test_every_copied_path_is_in_the_build_context() -> None:
    for instruction, args in stages()[0]:
        if instruction == "COPY" and "--from" not in args:
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert not ignored(source.rstrip("/")), f"{source} is excluded by .dockerignore"
