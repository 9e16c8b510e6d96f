"""`kill -9` of `uwf serve` between steps, then a restart: the execution resumes and finishes.

This runs the real console script as a separate process, exactly as `make run` does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import EXAMPLES, free_socket
from tests.processes import wait_healthy

pytestmark = pytest.mark.slow
UWF = Path(sys.executable).parent / "uwf"


class Serve:
    """`uwf serve` as a child process we can kill."""

    def __init__(self, home: Path) -> None:
        sock = free_socket()
        self.port = sock.getsockname()[1]
        sock.close()
        self.base = f"http://127.0.0.1:{self.port}"
        self.key = "crash-test-key"
        self.env = {
            **os.environ,
            "UWF_HOME": str(home),
            "UWF_PORT": str(self.port),
            "UWF_ADMIN_KEY": self.key,
            "UWF_METADATA_DIR": str(EXAMPLES),
            "UWF_LEASE_SECONDS": "3",
            "UWF_POLL_INTERVAL": "0.1",
        }
        self.log = home.parent / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(UWF), "serve"], env=self.env, stdout=log, stderr=log
            )
        wait_healthy(self.base, self.log, self.process)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base, timeout=10, headers={"Authorization": f"Bearer {self.key}"}
        )


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    running = Serve(tmp_path / "home")
    try:
        yield running
    finally:
        running.stop()


def _wait(client: httpx.Client, url: str, until: Any, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        execution: dict[str, Any] = client.get(url).json()
        if until(execution) or time.monotonic() > deadline:
            return execution
        time.sleep(0.05)


def test_kill_9_between_steps_then_restart_resumes_without_repeats(serve: Serve) -> None:
    from uwf.sandboxes import sandbox_credentials

    serve.start()
    sandbox_url = f"{serve.base}/sandbox/zendesk"
    httpx.post(f"{sandbox_url}/_control", json={"latency_ms": 800}).raise_for_status()
    with serve.api() as client:
        accepted = client.post(
            "/v1/tenants/acme/actions",
            json={
                "workflow": "escalate_case",
                "input": {
                    "case_id": 77,
                    "priority": "P1",
                    "owner_email": "carol@acme.test",
                    "reason": "survives a crash",
                },
            },
        )
        assert accepted.status_code == 202
        url = accepted.headers["Location"]

        def two_steps_recorded(e: dict[str, Any]) -> bool:
            return sum(s["status"] == "succeeded" for s in e["steps"]) >= 2

        before = _wait(client, url, two_steps_recorded, 30)
    assert before["status"] == "running"
    recorded = {s["id"] for s in before["steps"] if s["status"] == "succeeded"}
    assert {"owner", "set_priority"} <= recorded

    serve.kill9()
    serve.start()  # a new process: the sandbox latency is back to 0

    with serve.api() as client:
        after = _wait(client, url, lambda e: e["status"] not in ("queued", "running"), 60)
    assert after["status"] == "succeeded", after
    steps = {s["id"]: s for s in after["steps"]}
    for step_id in recorded:
        assert steps[step_id]["attempts"] == 1, f"recorded step {step_id} ran again"
    assert all(s["status"] == "succeeded" for s in steps.values())

    creds = sandbox_credentials(Path(serve.env["UWF_HOME"]), "zendesk")
    with httpx.Client(
        base_url=sandbox_url, auth=(f"{creds['email']}/token", creds["api_token"])
    ) as crm:
        ticket = crm.get("/api/v2/tickets/77.json").json()["ticket"]
        comments = crm.get("/api/v2/tickets/77/comments.json").json()["comments"]
    assert ticket["priority"] == "urgent"
    assert ticket["assignee_id"] == 10004
    assert [c["body"] for c in comments if c["body"].startswith("Escalated")] == [
        "Escalated: survives a crash"
    ]
