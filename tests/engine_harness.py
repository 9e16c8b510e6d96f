"""What the engine and workflow tests share: the executor and the Pipe DB, driving one
tenant's workflows against a CRM sandbox over loopback, with retries fast enough for tests."""

from __future__ import annotations

from typing import Any

from tests.sandbox_server import RunningSandbox
from uwf.service import make_executor
from uwf.settings import Settings
from uwf.store import Execution, Store

__all__ = ["EngineHarness", "fast_retries"]

_FAST_RETRIES = """timeout_seconds: 5
retry:
  max_attempts: 3
  initial_delay_seconds: 0.05
  max_delay_seconds: 0.3
"""


def fast_retries(connection_yaml: str) -> str:
    """An example connection with a short timeout and quick retries instead of its own."""
    return connection_yaml.replace("timeout_seconds: 20\n", _FAST_RETRIES)


class EngineHarness:
    """Submits a tenant's actions and runs the executor until nothing is due."""

    tenant = "acme"

    def __init__(self, store: Store, settings: Settings, sandbox: RunningSandbox) -> None:
        self.store = store
        self.sandbox = sandbox
        self.executor = make_executor(settings, store, sandbox.url.rsplit("/", 1)[0])
        self.version = 0

    async def submit(self, workflow: str, data: dict[str, Any]) -> str:
        execution, _ = await self.store.create_execution(
            tenant=self.tenant, workflow=workflow, metadata_version=self.version, input=data
        )
        return execution.id

    async def run_due(self, seconds: float = 30) -> None:
        await self.executor.run_until_idle(seconds)

    async def execute(self, workflow: str, data: dict[str, Any], seconds: float = 30) -> Execution:
        """Submit one action, run until idle, and return it as it ended."""
        execution_id = await self.submit(workflow, data)
        await self.run_due(seconds)
        done = await self.store.get_execution(execution_id)
        assert done is not None
        return done
