"""Shared fixtures: a UWF home, both Pipe DB back ends, and a live `uwf serve` on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import structlog
import uvicorn

from uwf.api import create_app
from uwf.settings import Settings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "metadata"
ACME_EXAMPLES = EXAMPLES / "acme"  # one tenant alone, for tests that change its files
PG_URL = os.environ.get("UWF_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

# Servers started in-process log through structlog's defaults, whose console renderer draws
# an exception's traceback with every frame's locals (rich). For a crash deep in the engine
# that takes seconds of CPU, on the event loop the API shares: a request answered meanwhile
# (the 503 of an unreachable database) then waits for it, past a client's timeout on a loaded
# machine. `uwf serve` formats tracebacks as plain text (`configure_logging`); so do tests.
structlog.configure(
    processors=[
        *structlog.get_config()["processors"][:-1],
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
    ]
)


def require_service(name: str, url: str, variable: str, probe: Callable[[], None]) -> str:
    """`url` when `probe()` reaches the service; else skip, or fail in CI (`CI=true`)."""
    failure: list[str] = []

    def run() -> None:  # in a thread of its own: the caller may be inside an event loop
        try:
            probe()
        except Exception as exc:
            failure.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} at {url} is required in CI: {failure[0]}")
        pytest.skip(f"{name} at {url} not reachable ({failure[0]}); set {variable}")
    return url


@pytest.fixture(scope="session")
def pg_server() -> str:
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(PG_URL, timeout=3)
        await conn.close()

    return require_service("PostgreSQL", PG_URL, "UWF_TEST_PG_URL", lambda: asyncio.run(probe()))


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each store/engine test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'uwf.db'}"
        return
    pg = request.getfixturevalue("pg_server")
    async with fresh_pg_database(pg) as url:
        yield url


@contextlib.contextmanager
def fresh_pg_database_sync(server_url: str) -> Iterator[str]:
    """`fresh_pg_database` for synchronous tests (which start processes that use it)."""
    import asyncpg

    name = "uwf_t_" + secrets.token_hex(6)

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(server_url)
        await conn.execute(statement)
        await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        base = server_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.asynccontextmanager
async def fresh_pg_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database; dropped afterwards."""
    import asyncpg

    name = "uwf_t_" + secrets.token_hex(6)
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        base = server_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class LiveServer:
    """A `uwf serve` equivalent running in a thread on a loopback port."""

    base_url: str
    admin_key: str
    home: Path
    settings: Settings

    def client(self, *, auth: bool = True) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.admin_key}"} if auth else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def sandbox(self) -> httpx.Client:
        """A client of the Zendesk sandbox, authenticated like a Zendesk admin would be."""
        from uwf.sandboxes import sandbox_credentials

        creds = sandbox_credentials(self.home, "zendesk")
        return httpx.Client(
            base_url=f"{self.base_url}/sandbox/zendesk",
            auth=(f"{creds['email']}/token", creds["api_token"]),
            timeout=30,
        )


def start_server(settings: Settings, admin_key: str) -> tuple[uvicorn.Server, threading.Thread]:
    sock = free_socket()
    port = sock.getsockname()[1]
    settings = settings.model_copy(update={"port": port})
    app = create_app(settings, admin_key=admin_key)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    return server, thread


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    home = tmp_path / "home"
    key = "test-admin-key-" + secrets.token_hex(8)
    settings = Settings(home=home, metadata_dir=EXAMPLES, poll_interval=0.05)
    server, thread = start_server(settings, key)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", key, home, settings)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
