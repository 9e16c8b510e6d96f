"""The chaos harness (`bench/chaos.py`) in small: workers SIGKILLed while the CRM misbehaves.

60 actions through 3 `uwf worker` processes on a fresh PostgreSQL database, a worker killed
every 2.5 s, the Zendesk sandbox injecting 10% 429s, 5% 503s, 3% responses dropped after the
write and 20 ms of latency. Afterwards every action must be final, none lost, and every
reason text must be in the CRM exactly once (at most once for failed or dead actions).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import fresh_pg_database_sync

pytestmark = pytest.mark.slow
CHAOS = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


@pytest.mark.timeout(260)
def test_no_action_is_lost_or_written_twice_while_workers_are_killed(
    tmp_path: Path, pg_server: str
) -> None:
    report_path = tmp_path / "report.json"
    with fresh_pg_database_sync(pg_server) as url:
        # A subprocess, as a user runs it: the harness owns its children's lifetimes and
        # signals, which must not mix with pytest's.
        result = subprocess.run(
            [
                sys.executable,
                str(CHAOS),
                "--actions=60",
                "--workers=3",
                "--kill-every=2.5",
                "--submit-rate=6",  # submissions last ~10 s, so the kills hit work in flight
                "--error-429=0.10",
                "--error-503=0.05",
                "--drop=0.03",
                "--latency-ms=20",
                # ~20 s on an idle machine; a loaded one restarts workers slowly.
                "--duration-limit=120",
                "--seed=4242",
                f"--database-url={url}",
                f"--json={report_path}",
                f"--log-dir={tmp_path / 'logs'}",
            ],
            capture_output=True,
            text=True,
            timeout=200,
            check=False,
        )
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    assert report_path.exists(), output
    report = json.loads(report_path.read_text())
    assert report["accepted"] == 60, output
    assert not report["timed_out"], output
    assert report["lost"] == 0, output
    assert report["succeeded"] + report["failed"] + report["dead"] + report["cancelled"] == 60
    assert report["duplicates"] == 0, output
    assert report["succeeded_without_effect"] == 0, output
    assert report["orphan_comments"] == 0, output
    assert report["foreign_step_keys"] == 0, output
    assert report["kills"] >= 2, output
    assert report["unexpected_exits"] == 0, output
    stats = report["crm_stats"]
    assert stats["injected"].get("429", 0) > 0, output  # the faults really happened
    assert report["within_budget"], output  # no sliding 60 s above the connection's budget
    assert report["ok"], output
    assert result.returncode == 0, output
