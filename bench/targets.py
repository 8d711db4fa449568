"""The benchmark targets: how to start each server, and the processes that run them.

Every server is started as its own process group on 127.0.0.1 and a free port, and
``ServerProcess.stop`` (or ``kill_all`` on exit) ends the group, so nothing outlives a run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DRIVER_DIR = BENCH / "driver"
PEERS_DIR = BENCH / "peers"
PEERS_VENV = BENCH / ".venv-peers"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"


def main_python() -> str:
    """collab's own interpreter: the repo's .venv if there is one, else this one."""
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


@dataclass(frozen=True)
class Target:
    name: str
    #: Table label.
    label: str
    #: Wire framing the driver speaks: "yws", "hocuspocus" or "echo".
    protocol: str
    #: Stores documents across restarts (so cold load applies).
    persistent: bool
    #: Builds the command line from (port, data dir).
    command: Callable[[int, Path], list[str]]
    #: Extra environment from (port, data dir).
    env: Callable[[int, Path], dict[str, str]] = lambda port, data: {}
    cwd: Path = BENCH
    #: Signal for a graceful stop. SIGTERM, which every target handles: a shell that starts
    #: a job in the background makes it ignore SIGINT.
    stop_signal: int = signal.SIGTERM
    #: Scenarios this target takes part in.
    scenarios: frozenset[str] = frozenset(
        {"fanout", "throughput", "idle", "replay", "coldload"}
        | {"cursors", "many_rooms", "large_docs"}
    )
    #: What must be installed first (checked by `missing`).
    needs: tuple[Path, ...] = ()
    #: HTTP path answering 200 once ready (None: an open TCP port is enough).
    ready_path: str | None = None
    #: HTTP path with server-side statistics as JSON, fetched after throughput runs if present.
    stats_path: str | None = None
    #: Runs offline compaction on a stopped server's data dir (None: not supported).
    compact: Callable[[Path], list[str]] | None = None
    #: Access token every client presents (y-websocket's ?token=), if the target wants one.
    token: str | None = None
    notes: str = ""

    def missing(self) -> list[str]:
        return [str(p) for p in self.needs if not p.exists()]


def _collab(
    db: str | None, server: str = "uvicorn", lift_limits: bool = True, secure: bool = False
) -> Callable[[int, Path], list[str]]:
    def command(port: int, data: Path) -> list[str]:
        path = db if db is not None else str(data / "collab.db")
        return (
            [
                main_python(),
                "-m",
                "collab",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--db",
                path,
                "--server",
                server,
                "--log-level",
                "warning",
            ]
            + (LIFTED_LIMITS if lift_limits else [])
            + (SECURE if secure else [])
        )

    return command


#: The drivers are load generators, each client far past what a person types: the rate
#: limits are lifted (the check itself still runs on every message).
LIFTED_LIMITS = [
    "--rate-messages",
    "1000000",
    "--burst-messages",
    "1000000",
    "--rate-bytes",
    "1000000000",
    "--burst-bytes",
    "1000000000",
    # every client of the driver comes from 127.0.0.1 (many_rooms opens 2,000)
    "--max-connections-per-address",
    "100000",
]


#: Round two's "security on the hot path" target: every connection must present a token
#: (HS256, checked at the handshake), no anonymous access, and the rate limits at their
#: defaults (1,000 messages/s per connection, 4 MiB/s), which no scenario's client exceeds.
BENCH_SECRET = "bench-secret-bench-secret-bench-secret!"
SECURE = ["--jwt-secret", BENCH_SECRET, "--anonymous", "none"]


def _jwt(claims: dict[str, object], secret: str) -> str:
    """An HS256 JWT, by hand (only the standard library here)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


BENCH_TOKEN = _jwt({"sub": "bench", "docs": {"*": "write"}}, BENCH_SECRET)


def _collab_compact(data: Path) -> list[str]:
    return [
        main_python(),
        "-m",
        "collab",
        "docs",
        "compact",
        "--all",
        "--db",
        str(data / "collab.db"),
    ]


def _node(script: str, *args: str) -> Callable[[int, Path], list[str]]:
    def command(port: int, data: Path) -> list[str]:
        return ["node", script, *[a.format(port=port, data=data) for a in args]]

    return command


#: A checkout of an earlier collab commit, for before/after runs in one interleaved
#: benchmark (target "collab-baseline"): git worktree add /tmp/base <commit>; then
#: BENCH_BASELINE=/tmp/base bench/run.py --targets collab,collab-baseline
BASELINE = Path(os.environ.get("BENCH_BASELINE", "/nonexistent-baseline"))

YWS_SERVER = "node_modules/@y/websocket-server/src/server.js"
#: The bare relay takes part in every scenario that needs no server state (round two's
#: comparison of ASGI stacks); round one ran it in throughput only.
ECHO_ONLY = frozenset({"throughput", "fanout", "idle", "cursors", "many_rooms"})
ROUND_ONE = frozenset({"fanout", "throughput", "idle", "replay", "coldload"})
ROUND_TWO = frozenset({"cursors", "many_rooms", "large_docs"})
ALL = ROUND_ONE | ROUND_TWO
NO_COLDLOAD = ALL - {"coldload"}

TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target(
            name="collab",
            label="collab + SQLite (uvicorn)",
            protocol="yws",
            persistent=True,
            command=_collab(None),
            cwd=REPO,
            ready_path="/readyz",
            stats_path="/api/stats",
            compact=_collab_compact,
            notes="`collab serve --server uvicorn` (uvicorn, websockets, uvloop, httptools)",
        ),
        Target(
            name="collab-hypercorn",
            label="collab + SQLite (hypercorn)",
            protocol="yws",
            persistent=True,
            command=_collab(None, "hypercorn"),
            cwd=REPO,
            ready_path="/readyz",
            stats_path="/api/stats",
            compact=_collab_compact,
            notes="`collab serve --server hypercorn` (hypercorn, wsproto, h11)",
        ),
        Target(
            name="collab-secure",
            label="collab + SQLite (uvicorn), tokens + default limits",
            protocol="yws",
            persistent=True,
            command=_collab(None, lift_limits=False, secure=True),
            cwd=REPO,
            ready_path="/readyz",
            stats_path=None,  # /api/stats wants the metrics token once tokens are on
            scenarios=frozenset({"fanout", "throughput", "cursors"}),
            token=BENCH_TOKEN,
            notes="every connection presents an HS256 token; rate limits at their defaults",
        ),
        Target(
            name="collab-baseline",
            label="collab + SQLite (hypercorn), baseline commit",
            protocol="yws",
            persistent=True,
            command=_collab(None, "hypercorn", lift_limits=False),
            # run from the baseline checkout: `python -m collab` finds its package first
            cwd=BASELINE,
            env=lambda port, data: {"PYTHONPATH": str(BASELINE)},
            ready_path="/readyz",
            stats_path="/api/stats",
            scenarios=ROUND_ONE | {"cursors"},  # cursors: awareness before coalescing
            needs=(BASELINE / "collab" / "__init__.py",),
            notes="the checkout named by $BENCH_BASELINE, for before/after comparisons",
        ),
        Target(
            name="collab-baseline-uvicorn",
            label="collab + SQLite (uvicorn), baseline commit",
            protocol="yws",
            persistent=True,
            command=_collab(None, "uvicorn", lift_limits=False),
            cwd=BASELINE,
            env=lambda port, data: {"PYTHONPATH": str(BASELINE)},
            ready_path="/readyz",
            stats_path="/api/stats",
            scenarios=ROUND_ONE | {"cursors"},  # cursors: awareness before coalescing
            needs=(BASELINE / "collab" / "__init__.py",),
            notes="the checkout named by $BENCH_BASELINE under uvicorn",
        ),
        Target(
            name="collab-memory",
            label="collab, in memory",
            protocol="yws",
            persistent=False,
            command=_collab(":memory:"),
            cwd=REPO,
            scenarios=NO_COLDLOAD,
            ready_path="/readyz",
            stats_path="/api/stats",
        ),
        Target(
            name="hocuspocus-sqlite",
            label="Hocuspocus + SQLite",
            protocol="hocuspocus",
            persistent=True,
            command=_node("hocuspocus.mjs", "--port", "{port}", "--sqlite", "{data}/hocuspocus.db"),
            cwd=PEERS_DIR,
            needs=(PEERS_DIR / "node_modules",),
        ),
        Target(
            name="hocuspocus",
            label="Hocuspocus, in memory",
            protocol="hocuspocus",
            persistent=False,
            command=_node("hocuspocus.mjs", "--port", "{port}"),
            cwd=PEERS_DIR,
            scenarios=NO_COLDLOAD,
            needs=(PEERS_DIR / "node_modules",),
        ),
        Target(
            name="ywebsocket",
            label="@y/websocket-server, in memory",
            protocol="yws",
            persistent=False,
            command=_node(YWS_SERVER),
            env=lambda port, data: {"HOST": "127.0.0.1", "PORT": str(port)},
            cwd=PEERS_DIR,
            scenarios=NO_COLDLOAD,
            needs=(PEERS_DIR / "node_modules",),
        ),
        Target(
            name="ywebsocket-leveldb",
            label="@y/websocket-server + LevelDB",
            protocol="yws",
            persistent=True,
            command=_node(YWS_SERVER),
            env=lambda port, data: {
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "YPERSISTENCE": str(data / "leveldb"),
            },
            cwd=PEERS_DIR,
            needs=(PEERS_DIR / "node_modules",),
        ),
        Target(
            name="pycrdt-websocket",
            label="pycrdt-websocket, in memory",
            protocol="yws",
            persistent=False,
            command=lambda port, data: [
                str(PEERS_PYTHON),
                "-m",
                "hypercorn",
                "--bind",
                f"127.0.0.1:{port}",
                "pycrdt_ws_app:app",
            ],
            env=lambda port, data: {"BENCH_PYCRDT_DB": ""},
            scenarios=NO_COLDLOAD,
            needs=(PEERS_PYTHON,),
        ),
        Target(
            name="pycrdt-websocket-sqlite",
            label="pycrdt-websocket + SQLite",
            protocol="yws",
            persistent=True,
            command=lambda port, data: [
                str(PEERS_PYTHON),
                "-m",
                "hypercorn",
                "--bind",
                f"127.0.0.1:{port}",
                "pycrdt_ws_app:app",
            ],
            env=lambda port, data: {"BENCH_PYCRDT_DB": str(data / "pycrdt.db")},
            needs=(PEERS_PYTHON,),
        ),
        Target(
            name="echo-hypercorn",
            label="limit: echo app, hypercorn",
            protocol="echo",
            persistent=False,
            command=lambda port, data: [
                main_python(),
                "-m",
                "hypercorn",
                "--bind",
                f"127.0.0.1:{port}",
                "echo_app:app",
            ],
            scenarios=ECHO_ONLY,
            notes="same interpreter and hypercorn as collab",
        ),
        Target(
            name="echo-uvicorn",
            label="limit: echo app, uvicorn",
            protocol="echo",
            persistent=False,
            command=lambda port, data: [
                str(PEERS_PYTHON),
                "-m",
                "uvicorn",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
                "echo_app:app",
            ],
            scenarios=ECHO_ONLY,
            needs=(PEERS_PYTHON,),
            notes="uvicorn[standard]: uvloop, httptools, websockets",
        ),
        Target(
            name="echo-granian",
            label="limit: echo app, granian",
            protocol="echo",
            persistent=False,
            command=lambda port, data: [
                str(PEERS_PYTHON),
                "-m",
                "granian",
                "--interface",
                "asgi",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--log-level",
                "warning",
                "echo_app:app",
            ],
            scenarios=ECHO_ONLY,
            needs=(PEERS_PYTHON,),
            notes="granian (a Rust ASGI server), one worker",
        ),
    ]
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(eq=False)
class ServerProcess:
    """One running target server (its own process group)."""

    target: Target
    data: Path
    log_path: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_s: float = 0.0
    _log: object = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> ServerProcess:
        """Start the server and wait until it accepts connections.

        :raises RuntimeError: if it exits or is not ready within ``timeout`` seconds.
        """
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {**os.environ, **self.target.env(self.port, self.data)}
        env.setdefault("NODE_ENV", "production")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self._log.write(
            f"--- start {' '.join(self.target.command(self.port, self.data))}\n".encode()
        )
        self._log.flush()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.target.command(self.port, self.data),
            cwd=self.target.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _LIVE.add(self)
        deadline = self.started_at + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.target.name} exited with {self.proc.returncode} on start:\n"
                    + self.log_tail()
                )
            if self._ready():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.target.name} not ready after {timeout} s:\n" + self.log_tail()
                )
            time.sleep(0.05)
        self.ready_s = time.monotonic() - self.started_at
        return self

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
        except OSError:
            return False
        if self.target.ready_path is None:
            return True
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}{self.target.ready_path}", timeout=2
            ) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stats(self) -> dict[str, object] | None:
        """The target's statistics endpoint as JSON, or None where it has none."""
        if self.target.stats_path is None:
            return None
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}{self.target.stats_path}", timeout=5
            ) as r:
                if r.status != 200:
                    return None
                return json.loads(r.read())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 30.0) -> float:
        """Stop gracefully (then kill the group); returns the seconds it took."""
        t0 = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(self.target.stop_signal)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._log_line(
                    f"--- no exit {timeout} s after signal {self.target.stop_signal}: killing"
                )
        self._kill_group()
        _LIVE.discard(self)
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None
        return time.monotonic() - t0

    def _kill_group(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def _log_line(self, line: str) -> None:
        if self._log is not None:
            self._log.write((line + "\n").encode())  # type: ignore[attr-defined]
            self._log.flush()  # type: ignore[attr-defined]

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


_LIVE: set[ServerProcess] = set()


def kill_all() -> None:
    """Kill every server this process started and has not stopped (used on exit)."""
    for server in list(_LIVE):
        server._kill_group()
        _LIVE.discard(server)


def proc_sample(pid: int) -> dict[str, float]:
    """CPU seconds (utime+stime, plus reaped children) and VmRSS of a process and descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry))
    pids = [pid]
    for p in pids:
        pids.extend(children.get(p, []))
    ticks = 0
    rss = 0
    for p in pids:
        stat = _stat(p)
        if stat is not None:
            ticks += stat[1]
        rss += _rss_kib(p)
    return {"cpu_s": ticks / os.sysconf("SC_CLK_TCK"), "rss_kib": rss}


def _stat(pid: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2 :].split()
    return int(rest[1]), int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total
