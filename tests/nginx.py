"""Real nginx in front of real ``collab serve`` processes on loopback, configured from the
shipped ``deploy/nginx.conf`` (only the upstream addresses and the port are changed)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import ROOT, free_port

SHIPPED = ROOT / "deploy" / "nginx.conf"


def nginx_binary() -> str:
    """The nginx executable (scripts/test installs Debian's package)."""
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        raise RuntimeError("nginx is not installed: run ./scripts/test, which installs it")
    return found


def render(site: str, upstreams: list[int], port: int) -> str:
    """The shipped site with its upstream servers pointed at ``upstreams`` on loopback."""
    servers = re.findall(r"^\s*server collab\d+:1234 (.*);$", site, flags=re.M)
    assert servers, "deploy/nginx.conf lists its nodes as 'server collabN:1234 ...;'"
    options = servers[0]
    site = re.sub(r"^\s*server collab\d+:1234 .*;\n", "", site, flags=re.M)
    lines = "".join(f"    server 127.0.0.1:{p} {options};\n" for p in upstreams)
    site = site.replace("    keepalive 32;", lines + "    keepalive 32;")
    return site.replace("listen 80;", f"listen 127.0.0.1:{port};")


def main_config(directory: Path, site: str) -> Path:
    """A whole nginx.conf around ``site`` (an http{}-level file), everything in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "site.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read our temp dirs
    conf = directory / "nginx.conf"
    conf.write_text(
        f"{user}worker_processes 1;\npid {directory}/nginx.pid;\n"
        f"error_log {directory}/error.log info;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"  access_log {directory}/access.log;\n"
        f"  client_body_temp_path {directory}/body;\n  proxy_temp_path {directory}/proxy;\n"
        f"  fastcgi_temp_path {directory}/fastcgi;\n  uwsgi_temp_path {directory}/uwsgi;\n"
        f"  scgi_temp_path {directory}/scgi;\n"
        f"  include {directory}/site.conf;\n"
        "}\n"
    )
    return conf


def check(conf: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on ``conf``."""
    return subprocess.run(
        [nginx_binary(), "-t", "-c", str(conf), "-p", str(conf.parent)],
        capture_output=True,
        text=True,
        timeout=30,
    )


class Nginx:
    """nginx in the foreground, started on a free port in front of ``upstreams``."""

    def __init__(self, directory: Path, upstreams: list[int]) -> None:
        self.port = free_port()
        self.directory = directory
        self.conf = main_config(directory, render(SHIPPED.read_text(), upstreams, self.port))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        result = check(self.conf)
        assert result.returncode == 0, result.stderr
        self.proc = subprocess.Popen(
            [nginx_binary(), "-c", str(self.conf), "-p", str(self.directory), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not start:\n{self.log()}")

    def log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
