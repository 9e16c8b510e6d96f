"""Scale-out on PostgreSQL: API and workers as separate processes; workers come and go.

Every test here runs real `uwf serve --no-worker` and `uwf worker` processes on one PostgreSQL
database, against the Zendesk sandbox that `uwf serve` mounts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import EXAMPLES, free_socket, fresh_pg_database_sync
from tests.processes import wait_healthy

pytestmark = pytest.mark.slow
UWF = Path(sys.executable).parent / "uwf"
KEY = "scaleout-key"


@dataclass
class Cluster:
    base: str
    home: Path
    env: dict[str, str]
    logs: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *args: str, name: str, drain_seconds: str = "10") -> subprocess.Popen[bytes]:
        env = {**self.env, "UWF_DRAIN_SECONDS": drain_seconds}
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen([str(UWF), *args], env=env, stdout=log, stderr=log)
        self.processes.append(process)
        return process

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
        )

    def sandbox(self) -> httpx.Client:
        from uwf.sandboxes import sandbox_credentials

        creds = sandbox_credentials(self.home, "zendesk")
        return httpx.Client(
            base_url=f"{self.base}/sandbox/zendesk",
            timeout=30,
            auth=(f"{creds['email']}/token", creds["api_token"]),
        )


@pytest.fixture
def cluster(tmp_path: Path, pg_server: str) -> Iterator[Cluster]:
    with fresh_pg_database_sync(pg_server) as url:
        sock = free_socket()
        port = sock.getsockname()[1]
        sock.close()
        env = {
            **os.environ,
            "UWF_HOME": str(tmp_path / "home"),
            "UWF_PORT": str(port),
            "UWF_ADMIN_KEY": KEY,
            "UWF_DATABASE_URL": url,
            "UWF_METADATA_DIR": str(EXAMPLES),
            "UWF_POLL_INTERVAL": "0.05",
            "UWF_LEASE_SECONDS": "30",
        }
        running = Cluster(f"http://127.0.0.1:{port}", tmp_path / "home", env, tmp_path)
        try:
            running.start("serve", "--no-worker", name="serve")
            wait_healthy(running.base, tmp_path / "serve.log")
            yield running
        finally:
            for process in running.processes:
                if process.poll() is None:
                    process.terminate()
            for process in running.processes:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()


def _statuses(api: httpx.Client, ids: list[str]) -> list[str]:
    return [api.get(f"/v1/tenants/acme/executions/{i}").json()["status"] for i in ids]


def _wait_for_log(path: Path, text: str, seconds: float = 60) -> None:
    # A loaded machine may take seconds to import and start a worker.
    deadline = time.monotonic() + seconds
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"{path.name} never said {text}"
        time.sleep(0.1)


def test_sigterm_drains_a_worker_and_another_finishes_the_rest(cluster: Cluster) -> None:
    httpx.post(
        f"{cluster.base}/sandbox/zendesk/_control", json={"latency_ms": 2000}
    ).raise_for_status()
    with cluster.api() as api:
        cases = [26 + i for i in range(12)]  # open tickets (every 25th is closed)
        ids = [
            api.post(
                "/v1/tenants/acme/actions",
                json={
                    "workflow": "escalate_case",
                    "input": {"case_id": case, "priority": "P2", "reason": f"drain {case}"},
                },
            ).json()["id"]
            for case in cases
        ]
        first = cluster.start("worker", name="worker-1", drain_seconds="1")
        _wait_for_log(cluster.logs / "worker-1.log", '"worker started"')
        time.sleep(1.5)  # some executions are half way through their steps
        started = time.monotonic()
        first.send_signal(signal.SIGTERM)
        code = first.wait(timeout=30)
        drained_in = time.monotonic() - started
        cluster.start("worker", name="worker-2")
        deadline = time.monotonic() + 60
        while any(s in ("queued", "running") for s in _statuses(api, ids)):
            assert time.monotonic() < deadline, _statuses(api, ids)
            time.sleep(0.2)
        statuses = _statuses(api, ids)
    log = (cluster.logs / "worker-1.log").read_text()
    assert code == 0
    assert drained_in < 10  # the drain is bounded (1 s here), not the 30 s lease
    assert '"worker stopped"' in log
    assert '"released unfinished executions"' in log  # handed over, not left to expire
    assert statuses == ["succeeded"] * 12
    with cluster.sandbox() as crm:
        for case in cases:
            comments = crm.get(f"/api/v2/tickets/{case}/comments.json").json()["comments"]
            notes = [c for c in comments if c["body"] == f"Escalated: drain {case}"]
            assert len(notes) == 1, (case, [c["body"] for c in comments])


def test_an_unreachable_database_is_a_503_and_nothing_is_accepted(
    tmp_path: Path, pg_server: str
) -> None:
    import asyncpg

    from tests.conftest import LiveServer, start_server
    from uwf.settings import Settings

    with fresh_pg_database_sync(pg_server) as url:
        settings = Settings(home=tmp_path / "home", database_url=url, metadata_dir=EXAMPLES)
        server, thread = start_server(settings, KEY)
        port = server.servers[0].sockets[0].getsockname()[1]
        live = LiveServer(f"http://127.0.0.1:{port}", KEY, settings.home, settings)
        try:
            with live.client() as client:
                ok = client.post(
                    "/v1/tenants/acme/actions",
                    json={"workflow": "escalate_case", "input": {"case_id": 3, "priority": "P3"}},
                )
                name = url.rsplit("/", 1)[1]

                async def drop() -> None:
                    admin = await asyncpg.connect(pg_server)
                    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                    await admin.close()

                asyncio.run(drop())
                down = client.post(
                    "/v1/tenants/acme/actions",
                    json={"workflow": "escalate_case", "input": {"case_id": 4, "priority": "P3"}},
                )
        finally:
            server.should_exit = True
            thread.join(timeout=20)
    assert ok.status_code == 202
    assert down.status_code == 503
    assert down.headers["content-type"] == "application/problem+json"
    assert down.headers["Retry-After"] == "5"
    assert "nothing was stored" in down.json()["detail"]
