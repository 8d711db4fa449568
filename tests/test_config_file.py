"""collab config and --config: one definition of every setting, four sources, in order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def collab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    return subprocess.run(
        [sys.executable, "-m", "collab", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def settings_of(output: str) -> dict[str, str]:
    """{key: "value  # source"} from `collab config`."""
    lines = [line for line in output.splitlines() if " = " in line and not line.startswith("#")]
    return dict(line.split(" = ", 1) for line in lines)


def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    config = tmp_path / "collab.toml"
    config.write_text('port = 8080\nidle-unload = 5\nmax_depth = 50\nlog-level = "debug"\n')
    result = collab(
        "config",
        "--config",
        str(config),
        "--port",
        "7000",
        env={"COLLAB_IDLE_UNLOAD": "9", "COLLAB_PORT": "7500"},
    )
    assert result.returncode == 0, result.stderr
    shown = settings_of(result.stdout)
    assert shown["port"] == "7000  # flag"
    assert shown["idle-unload"] == "9.0  # environment COLLAB_IDLE_UNLOAD"
    assert shown["max-depth"] == f"50  # file {config}"
    assert shown["log-level"] == f'"debug"  # file {config}'
    assert shown["host"] == '"127.0.0.1"  # default'


def test_secrets_are_masked(tmp_path: Path) -> None:
    secret = "a-very-secret-value-of-forty-bytes-long!"
    result = collab("config", env={"COLLAB_JWT_SECRET": secret})
    assert secret not in result.stdout + result.stderr
    assert settings_of(result.stdout)["jwt-secret"] == '"********"  # environment COLLAB_JWT_SECRET'


def test_a_bad_config_file_is_one_clear_line(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("prot = 1\n")
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    for path, message in (
        (unknown, "unknown setting 'prot'"),
        (broken, "is not valid TOML"),
        (tmp_path / "missing.toml", "does not exist"),
    ):
        result = collab("serve", "--config", str(path))
        assert result.returncode == 2
        assert message in result.stderr
        assert "Traceback" not in result.stderr


def test_serve_runs_with_what_the_file_says(tmp_path: Path) -> None:
    from tests.conftest import free_port

    port = free_port()
    config = tmp_path / "collab.toml"
    config.write_text(f'port = {port}\ndb = "{tmp_path / "c.db"}"\n')
    server = subprocess.Popen(
        [sys.executable, "-m", "collab", "serve", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import time
        import urllib.request

        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(20)
    assert (tmp_path / "c.db").exists()


def test_one_value_of_a_repeatable_setting_needs_no_brackets(tmp_path: Path) -> None:
    config = tmp_path / "collab.toml"
    config.write_text('allowed-origin = "https://app.example"\n')
    result = collab("config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert (
        settings_of(result.stdout)["allowed-origin"] == f'["https://app.example"]  # file {config}'
    )
