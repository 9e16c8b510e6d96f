"""The outbound network guard at work: at connect time, on redirects, in `connections test`
and in `metadata validate`, against real servers on loopback."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import ACME_EXAMPLES
from uwf.auth import Credentials, StaticAuth
from uwf.connectors import NetworkPolicy, OperationSpec, OutboundRefusedError, builtin_connectors
from uwf.connectors.runtime import ConnectorRuntime, Target
from uwf.errors import FatalError
from uwf.metadata import load_directory, validate_directory
from uwf.service import make_executor
from uwf.settings import Settings
from uwf.store import Store


class Crm:
    """A loopback server that counts requests; `/moved` redirects to the metadata address."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        if request.path.endswith("/moved"):
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")
        return web.json_response({"ticket": {"id": 1}})


@pytest.fixture
async def crm() -> AsyncIterator[Crm]:
    server = Crm()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield server
    await runner.cleanup()


def _target(base_url: str) -> Target:
    return Target(
        connection="acme-zendesk",
        base_url=base_url,
        spec=builtin_connectors()["zendesk"],
        auth=StaticAuth(Credentials({"Authorization": "Bearer T0KEN-123456"}, ("T0KEN-123456",))),
        timeout_seconds=5,
        config={},
    )


_GET = OperationSpec.model_validate({"method": "GET", "path": "/{{ record_id }}"})


async def test_a_name_that_resolves_to_loopback_is_refused_before_anything_is_sent(
    crm: Crm,
) -> None:
    # https and a host name pass the URL check; `localhost` resolves to 127.0.0.1 at connect.
    runtime = ConnectorRuntime(NetworkPolicy.parse("", allow_http=True))
    try:
        with pytest.raises(OutboundRefusedError) as caught:
            await runtime.call(_target(f"http://localhost:{crm.port}"), _GET, {"record_id": 1})
    finally:
        await runtime.close()
    assert "localhost" in caught.value.message
    assert "loopback" in caught.value.message
    assert caught.value.request is not None  # the ledger still gets the (redacted) request
    assert "T0KEN" not in str(caught.value.request)
    assert crm.requests == []


async def test_the_same_server_is_reached_once_the_deployment_allows_it(crm: Crm) -> None:
    runtime = ConnectorRuntime(NetworkPolicy.parse(f"localhost:{crm.port}"))
    try:
        result = await runtime.call(_target(f"http://localhost:{crm.port}"), _GET, {"record_id": 1})
    finally:
        await runtime.close()
    assert result.response["status"] == 200
    assert crm.requests == ["/1"]


async def test_a_redirect_is_not_followed(crm: Crm) -> None:
    runtime = ConnectorRuntime(NetworkPolicy.parse(f"127.0.0.1:{crm.port}"))
    try:
        with pytest.raises(FatalError) as caught:
            await runtime.call(
                _target(f"http://127.0.0.1:{crm.port}"), _GET, {"record_id": "moved"}
            )
    finally:
        await runtime.close()
    assert caught.value.status == 302
    assert crm.requests == ["/moved"]


ROGUE = """kind: connection
name: acme-rogue
tenant: acme
connector: zendesk
base_url: "http://169.254.169.254/latest"
auth:
  type: api_token
  email: a@b.test
  token: {env: ROGUE_TOKEN}
"""


def test_metadata_validate_reports_a_forbidden_base_url_with_file_and_line(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "metadata"
    shutil.copytree(ACME_EXAMPLES, directory)
    (directory / "rogue.yaml").write_text(ROGUE)
    bundle, problems = validate_directory(directory)
    assert bundle is None
    [problem] = problems
    assert (problem.file, problem.line) == ("rogue.yaml", 5)
    assert "169.254.169.254" in problem.message
    assert "link-local" in problem.message


async def test_connections_test_says_in_plain_words_that_the_guard_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "metadata"
    shutil.copytree(ACME_EXAMPLES, directory)
    conn = directory / "acme-zendesk.yaml"
    # A host name passes the static check; it resolves to loopback when connecting.
    conn.write_text(conn.read_text().replace('"${sandbox:zendesk}"', '"https://localhost:9"'))
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'uwf.db'}")
    try:
        version, _ = await store.apply_metadata(load_directory(directory), "test")
        executor = make_executor(Settings(home=tmp_path / "home"), store, None)
        bundle = await store.metadata(version)
        assert bundle is not None
        report = await executor.probe(version, bundle.connections["acme-zendesk"])
        await executor.runtime.close()
    finally:
        await store.close()
    assert report["ok"] is False
    assert report["problem"].startswith("UWF will not connect there")
    assert "loopback" in report["problem"]
