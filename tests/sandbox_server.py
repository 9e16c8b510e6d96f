"""Run CRM sandboxes behind a real uvicorn on loopback, mounted the way UWF mounts them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from uwf.sandboxes import SandboxApp, create_sandbox_app

PREFIX = "/sandbox/zendesk"


@dataclass
class RunningSandbox:
    """A sandbox served over HTTP; ``url`` already includes the mount prefix."""

    url: str
    home: Path
    app: SandboxApp

    @property
    def credentials(self) -> dict[str, str]:
        return self.app.credentials

    def client(self, email: str | None = None, token: str | None = None) -> httpx.Client:
        """A client that authenticates like a Zendesk integration (email/token Basic)."""
        email = email or self.credentials["email"]
        auth = httpx.BasicAuth(f"{email}/token", token or self.credentials["api_token"])
        return httpx.Client(base_url=self.url, auth=auth, timeout=10)

    def control(self, **settings: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/_control", json=settings, timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.url}/_control", timeout=10).json()["stats"]
        return result

    def reset(self) -> None:
        httpx.delete(f"{self.url}/_control", timeout=10).raise_for_status()


@contextmanager
def serve_sandbox(home: Path, crm: str = "zendesk") -> Iterator[RunningSandbox]:
    """Serve a CRM's sandbox under ``/sandbox/<crm>`` of a parent app on a free loopback port.

    The `client()`, `credentials` helpers of `RunningSandbox` speak Zendesk's auth; other
    CRMs' tests build their own clients from ``app.credentials``.
    """
    prefix = f"/sandbox/{crm}"
    app = create_sandbox_app(crm, home)
    parent = Starlette(routes=[Mount(prefix, app=app)])
    config = uvicorn.Config(parent, host="127.0.0.1", port=0, log_level="critical", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningSandbox(f"http://127.0.0.1:{port}{prefix}", home, app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.close()
