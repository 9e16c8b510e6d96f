"""What the tests that start `uwf` as a process share: waiting for it to answer."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

__all__ = ["STARTUP_SECONDS", "wait_healthy"]

# Importing everything and migrating the Pipe DB takes a second or two on an idle machine; a
# loaded CI machine has been seen to need far longer, and a slow start is not what is tested.
STARTUP_SECONDS = 90.0


def wait_healthy(
    base_url: str,
    log: Path,
    process: subprocess.Popen[bytes] | None = None,
    seconds: float = STARTUP_SECONDS,
) -> None:
    """Wait until `base_url/healthz` answers 200; fail with the process's log otherwise."""
    deadline = time.monotonic() + seconds
    while True:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"uwf exited with {process.returncode}:\n{_read(log)}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"uwf did not answer in {seconds:.0f} s:\n{_read(log)}")
        time.sleep(0.1)


def _read(log: Path) -> str:
    try:
        return log.read_text(errors="replace")
    except OSError:
        return "(no log)"
