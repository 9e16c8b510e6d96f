"""An OAuth token expires under load shared by two worker processes: exactly one refresh.

`uwf serve --no-worker` (API and sandboxes) and two `uwf worker` processes share one
PostgreSQL Pipe DB; the tenant contoso reaches the Dynamics sandbox with OAuth client
credentials. The sandbox counts the requests its Entra ID token endpoint receives.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import EXAMPLES, free_socket, fresh_pg_database_sync
from tests.processes import wait_healthy

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Cluster:
    base: str
    home: Path
    worker_logs: list[Path]


UWF = Path(sys.executable).parent / "uwf"
KEY = "token-test-key"


@pytest.fixture
def cluster(tmp_path: Path, pg_server: str) -> Iterator[Cluster]:
    """API + sandboxes in one process, two workers in two more, one PostgreSQL database."""
    with fresh_pg_database_sync(pg_server) as url:
        yield from _cluster(tmp_path, url)


def _cluster(tmp_path: Path, url: str) -> Iterator[Cluster]:
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
    }
    processes: list[subprocess.Popen[bytes]] = []
    logs = [tmp_path / name for name in ("serve.log", "worker-1.log", "worker-2.log")]
    try:
        with logs[0].open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [str(UWF), "serve", "--no-worker"], env=env, stdout=log, stderr=log
                )
            )
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, logs[0], processes[0])
        for log_path in logs[1:]:
            with log_path.open("wb") as log:
                processes.append(
                    subprocess.Popen([str(UWF), "worker"], env=env, stdout=log, stderr=log)
                )
        yield Cluster(base, tmp_path / "home", logs[1:])
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _token_requests(sandbox: str) -> int:
    stats: dict[str, Any] = httpx.get(f"{sandbox}/_control").json()["stats"]
    return int(stats["token_requests"])


def test_one_token_request_for_50_executions_on_two_workers(cluster: Cluster) -> None:
    from uwf.sandboxes import sandbox_credentials

    base = cluster.base
    sandbox = f"{base}/sandbox/dynamics"
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    dev_token = sandbox_credentials(cluster.home, "dynamics")["access_token"]
    crm = httpx.Client(
        base_url=f"{sandbox}/api/data/v9.2",
        timeout=30,
        headers={"Authorization": f"Bearer {dev_token}", "Accept": "application/json"},
    )
    with crm:
        listed = crm.get(
            "/incidents",
            params={"$select": "incidentid", "$filter": "statecode eq 0", "$top": "50"},
        )
    cases = [c["incidentid"] for c in listed.json()["value"]]
    assert len(cases) == 50

    def escalate(case: str, priority: str) -> str:
        accepted = api.post(
            "/v1/tenants/contoso/actions",
            json={"workflow": "escalate_case", "input": {"case_id": case, "priority": priority}},
        )
        assert accepted.status_code == 202, accepted.text
        return str(accepted.json()["id"])

    def wait_all(ids: list[str]) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 90
        while True:
            done = [api.get(f"/v1/tenants/contoso/executions/{i}").json() for i in ids]
            if all(e["status"] not in ("queued", "running") for e in done):
                return done
            assert time.monotonic() < deadline, [e["status"] for e in done]
            time.sleep(0.2)

    # Tokens issued now live 6 seconds; the one after the warm-up, an hour. A slow machine may
    # need more than one token to warm up: only what happens after the expiry is counted.
    httpx.post(f"{sandbox}/_control", json={"token_ttl_seconds": 6}).raise_for_status()
    [warm] = wait_all([escalate(cases[0], "P2")])
    assert warm["status"] == "succeeded", warm
    before = _token_requests(sandbox)
    httpx.post(f"{sandbox}/_control", json={"token_ttl_seconds": 3600}).raise_for_status()
    time.sleep(6.5)  # every token issued so far has expired

    results = wait_all([escalate(case, "P1") for case in cases])
    api.close()

    assert [r["status"] for r in results] == ["succeeded"] * 50
    assert before >= 1
    assert _token_requests(sandbox) - before == 1
    worked = [log.read_text().count('"execution advanced"') for log in cluster.worker_logs]
    assert all(count > 0 for count in worked), worked  # both workers shared the load
