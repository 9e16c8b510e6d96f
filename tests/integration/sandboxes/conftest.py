"""Fixtures for the sandbox tests: the sandbox served over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.sandbox_server import PREFIX, RunningSandbox, serve_sandbox

__all__ = ["PREFIX", "RunningSandbox", "serve_sandbox"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """One server per test module: starting uvicorn and seeding costs ~0.2 s."""
    with serve_sandbox(tmp_path_factory.mktemp("home")) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_control(sandbox: RunningSandbox) -> Iterator[None]:
    # Limits, faults and stats are per test; records persist, so tests pick their own tickets.
    sandbox.reset()
    yield
    sandbox.reset()


@pytest.fixture
def client(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    with sandbox.client() as c:
        yield c
