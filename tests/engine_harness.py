"""What the engine and workflow tests share: the executor and the Pipe DB, driving one
tenant's workflows against a CRM sandbox over loopback, with retries fast enough for tests."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.sandbox_server import RunningSandbox, serve_sandbox
from uwf.metadata import load_directory
from uwf.service import make_executor
from uwf.settings import Settings
from uwf.store import Execution, Store

__all__ = [
    "EngineHarness",
    "example_metadata",
    "fast_retries",
    "note_only_workflow",
    "running_harness",
    "sandbox_fixture",
]

H = TypeVar("H", bound="EngineHarness")

_FAST_RETRIES = """timeout_seconds: 5
retry:
  max_attempts: 3
  initial_delay_seconds: 0.05
  max_delay_seconds: 0.3
"""


def fast_retries(connection_yaml: str) -> str:
    """An example connection with a short timeout and quick retries instead of its own."""
    return connection_yaml.replace("timeout_seconds: 20\n", _FAST_RETRIES)


def example_metadata(
    tmp_path: Path,
    source: Path,
    connection_file: str,
    documents: dict[str, str],
    edit: Callable[[str], str] | None = None,
) -> Path:
    """A metadata directory for one test: a copy of `source` (the examples, or one tenant's
    file), the connection in `connection_file` with quick retries (then `edit`ed), and
    `documents` added by file name."""
    directory = tmp_path / "metadata"
    if source.is_dir():
        shutil.copytree(source, directory)
    else:
        directory.mkdir()
        shutil.copy(source, directory / source.name)
    connection = directory / connection_file
    text = connection.read_text()
    assert "timeout_seconds: 20\n" in text, f"{connection_file} no longer has its timeout"
    text = fast_retries(text)
    connection.write_text(edit(text) if edit is not None else text)
    for name, document in documents.items():
        (directory / name).write_text(document)
    return directory


def note_only_workflow(tenant: str, connection: str) -> str:
    """`note_only`: one internal note on a case, the smallest write every CRM test makes."""
    return f"""
kind: workflow
name: note_only
tenant: {tenant}
connection: {connection}
input_schema:
  type: object
  required: [case_id, text]
steps:
  - id: note
    type: add_comment
    object: case
    record_id: "{{{{ input.case_id }}}}"
    body: "{{{{ input.text }}}}"
"""


def sandbox_fixture(crm: str = "zendesk") -> Callable[..., Iterator[RunningSandbox]]:
    """A `sandbox` fixture: `crm`'s sandbox on loopback, with a UWF home of the test's own.

    In a test module: `sandbox = sandbox_fixture("hubspot")`.
    """

    @pytest.fixture(name="sandbox")
    def _sandbox(tmp_path: Path) -> Iterator[RunningSandbox]:
        with serve_sandbox(tmp_path / "home", crm) as running:
            yield running

    return _sandbox


@contextlib.asynccontextmanager
async def running_harness(
    cls: type[H], database_url: str, sandbox: RunningSandbox, metadata_dir: Path
) -> AsyncIterator[H]:
    """A harness of class `cls` over a Pipe DB with `metadata_dir` applied; closed after."""
    store = await Store.open(database_url)
    settings = Settings(home=sandbox.home, poll_interval=0.05, lease_seconds=2)
    harness = cls(store, settings, sandbox)
    harness.version, _ = await store.apply_metadata(load_directory(metadata_dir), "test")
    try:
        yield harness
    finally:
        await harness.executor.runtime.close()
        await store.close()


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

    async def run(self, seconds: float = 30) -> None:
        """Run the executor until nothing is due (at most `seconds`)."""
        await self.run_due(seconds)

    async def execute(self, workflow: str, data: dict[str, Any], seconds: float = 30) -> Execution:
        """Submit one action, run until idle, and return it as it ended."""
        execution_id = await self.submit(workflow, data)
        await self.run_due(seconds)
        done = await self.store.get_execution(execution_id)
        assert done is not None
        return done
