"""Child processes for the bench scripts (run.py, chaos.py): start, measure, stop by PID.

Both scripts run as ``python bench/<script>.py``, so this module is imported as
``_processes`` from bench/ (the script's directory is first on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "metadata"
UWF = Path(sys.executable).parent / "uwf"
SANDBOX_PREFIX = "/sandbox/zendesk"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
# Seeded tickets 1-150; every 25th is closed and answers 422 ClosedPreventsUpdate.
TICKETS = tuple(i for i in range(1, 151) if i % 25)
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def _die_with_parent() -> None:
    # Runs in the child before exec. If the script is SIGKILLed (no `finally` runs), Linux
    # sends the child SIGTERM (PR_SET_PDEATHSIG), so not even that leaves a process behind.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class Child:
    """A process we start, measure through /proc, may SIGKILL, and always stop by its PID."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.process: subprocess.Popen[bytes] | None = None
        self.killed = False  # by us, on purpose

    def start(self) -> Child:
        with self.log.open("ab") as log:
            # A session of its own: Ctrl-C reaches only the script, which then stops the
            # child itself (and waits for it) instead of racing it.
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float:
        """utime + stime of the whole process (every thread), from /proc/<pid>/stat."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
        utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
        return (utime + stime) / CLK_TCK

    def wait_ready(self, url: str) -> None:
        """Until `url` answers 200; raises if the process exits or takes too long."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.process.returncode if self.process else None
                raise RuntimeError(f"{self.name} exited with {code}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {url} in {START_TIMEOUT_S:.0f} s")

    def sigkill(self) -> None:
        assert self.process is not None
        self.killed = True
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_S)

    def terminate(self) -> None:
        """SIGTERM without waiting (so that several children drain at once)."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL if it does not exit in time."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
        except KeyboardInterrupt:  # a second Ctrl-C: no more patience, but no orphan either
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
            raise

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextlib.contextmanager
def running(child: Child, ready_url: str) -> Iterator[Child]:
    """Start `child`, wait until `ready_url` answers, and stop it by its PID afterwards."""
    try:
        child.start()
        child.wait_ready(ready_url)
        yield child
    except Exception:
        print(f"{child.name} log (last lines):\n{child.log_tail()}", file=sys.stderr)
        raise
    finally:
        child.stop()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(**uwf: str) -> dict[str, str]:
    """The caller's environment without its UWF_* settings (a database URL, say, must not
    leak into the run), plus exactly the given ones as UWF_<NAME>."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UWF_")}
    return {**env, **{f"UWF_{k.upper()}": v for k, v in uwf.items()}}


@contextlib.contextmanager
def fresh_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on `server_url`'s server; dropped afterwards."""
    import asyncpg

    plain = server_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    name = f"{prefix}_{secrets.token_hex(6)}"

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(plain, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield urlunsplit(urlsplit(plain)._replace(path=f"/{name}"))
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def without_credentials(url: str) -> str:
    """A database URL fit for a report: no user, password or query."""
    parts = urlsplit(url)
    host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return urlunsplit(parts._replace(netloc=host, query=""))


def terminate_like_interrupt(signum: int, _frame: object) -> None:
    """SIGTERM handler: unwind exactly as Ctrl-C does, so every `finally` stops its child.

    Inside `asyncio.run` its SIGINT handler cancels the running task cleanly.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        raise KeyboardInterrupt
    signal.raise_signal(signal.SIGINT)
