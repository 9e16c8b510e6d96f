"""OAuth 2.0 tokens end to end: fetched once, shared, refreshed once, rotated, refused cleanly.

The token endpoint and the API are a small OAuth server written here, on loopback; the CRM
sandboxes' own token endpoints are exercised by their tests and the contract suite.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from uwf.auth import TokenManager, Vault, build_authenticator
from uwf.connectors import ConnectorSpec, NetworkPolicy
from uwf.connectors.runtime import ConnectorRuntime, Target
from uwf.errors import FatalError
from uwf.metadata import ConnectionSpec
from uwf.store import Store

# The test servers listen on loopback over http: allowed here, as a deployment would.
LOOPBACK = NetworkPolicy.parse("127.0.0.1")

SPEC = ConnectorSpec.model_validate(
    {
        "id": "toy",
        "name": "Toy CRM",
        "auth": {
            kind: {"type": "oauth2", "audience": "https://toy.test"}
            for kind in (
                "oauth2_client_credentials",
                "oauth2_refresh_token",
                "oauth2_password",
                "jwt_bearer",
            )
        },
        "objects": {
            "case": {
                "operations": {
                    "get": {"method": "GET", "path": "/cases/{{ record_id }}", "result": "body"},
                }
            }
        },
    }
)


@dataclass
class OAuthServer:
    """Issues tokens with a lifetime, rotates refresh tokens, and checks every API call."""

    ttl: int = 3600
    private_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    token_requests: list[dict[str, str]] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)
    refresh_tokens: set[str] = field(default_factory=lambda: {"rt-initial"})
    revoked_client: bool = False
    url: str = ""

    def pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    async def token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_requests.append(form)
        await asyncio.sleep(0.05)  # a real endpoint takes a moment: races would show
        grant = form.get("grant_type")
        if self.revoked_client:
            return web.json_response(
                {"error": "invalid_grant", "error_description": "app access revoked"}, status=400
            )
        body: dict[str, Any] = {}
        if grant == "refresh_token":
            if form.get("refresh_token") not in self.refresh_tokens:
                return web.json_response(
                    {"error": "invalid_grant", "error_description": "expired refresh token"},
                    status=400,
                )
            self.refresh_tokens.discard(form["refresh_token"])  # rotation: single use
            body["refresh_token"] = "rt-" + secrets.token_hex(4)
            self.refresh_tokens.add(body["refresh_token"])
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            public = self.private_key.public_key()
            claims = jwt.decode(
                form["assertion"], public, algorithms=["RS256"], audience="https://toy.test"
            )
            assert claims["sub"] == "integration@toy.test"
        elif grant == "password":
            assert form["password"] == "pw"
        access = "at-" + secrets.token_hex(8)
        self.valid.add(access)
        return web.json_response(
            {"access_token": access, "token_type": "Bearer", "expires_in": self.ttl, **body}
        )

    async def case(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.valid:
            return web.json_response({"error": "invalid_token"}, status=401)
        return web.json_response({"id": request.match_info["id"]})


@pytest.fixture
async def oauth() -> AsyncIterator[OAuthServer]:
    server = OAuthServer()
    app = web.Application()
    app.router.add_post("/oauth/token", server.token)
    app.router.add_get("/cases/{id}", server.case)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = await Store.open(database_url)
    yield s
    await s.close()


class Process:
    """What one worker process has: its own runtime and token manager, a shared Pipe DB."""

    def __init__(self, store: Store, vault: Vault) -> None:
        self.runtime = ConnectorRuntime(LOOPBACK)
        self.tokens = TokenManager(store.tokens, vault, self.runtime.session_for)

    def target(self, oauth: OAuthServer, auth: dict[str, Any]) -> Target:
        connection = ConnectionSpec.model_validate(
            {
                "kind": "connection",
                "name": "toy-conn",
                "tenant": "t",
                "connector": "toy",
                "base_url": oauth.url,
                "auth": {"token_url": f"{oauth.url}/oauth/token", **auth},
            }
        )
        secrets_by_env = {"SECRET": "s3cret", "RT": "rt-initial", "PW": "pw", "KEY": oauth.pem()}
        authenticator = build_authenticator(
            connection,
            SPEC,
            lambda ref: secrets_by_env[ref.env or ""],
            self.tokens,
            lambda text: text,
            oauth.url,
        )
        return Target("toy-conn", oauth.url, SPEC, authenticator, 10, {})

    async def get(self, target: Target, case: int = 1) -> Any:
        operation = SPEC.operation("case", "get")
        assert operation is not None
        return (await self.runtime.call(target, operation, {"record_id": case})).result


CLIENT_CREDENTIALS = {
    "type": "oauth2_client_credentials",
    "client_id": "app",
    "client_secret": {"env": "SECRET"},
}


async def test_one_token_for_many_calls_across_two_processes(
    oauth: OAuthServer, store: Store, tmp_path: Path
) -> None:
    vault = Vault.load(tmp_path)
    first, second = Process(store, vault), Process(store, vault)
    targets = [first.target(oauth, CLIENT_CREDENTIALS), second.target(oauth, CLIENT_CREDENTIALS)]
    try:
        results = await asyncio.gather(
            *((first if i % 2 else second).get(targets[i % 2], i) for i in range(50))
        )
    finally:
        await first.runtime.close()
        await second.runtime.close()
    assert [r["id"] for r in results] == [str(i) for i in range(50)]
    assert len(oauth.token_requests) == 1
    assert oauth.token_requests[0]["client_secret"] == "s3cret"


async def test_expired_token_is_refreshed_once_and_the_401_retried(
    oauth: OAuthServer, store: Store, tmp_path: Path
) -> None:
    process = Process(store, Vault.load(tmp_path))
    target = process.target(oauth, CLIENT_CREDENTIALS)
    try:
        await process.get(target)
        oauth.valid.clear()  # the CRM revoked every token it issued (or they expired early)
        results = await asyncio.gather(*(process.get(target, i) for i in range(10)))
    finally:
        await process.runtime.close()
    assert len(results) == 10
    assert len(oauth.token_requests) == 2


async def test_refresh_token_rotation_keeps_the_new_refresh_token(
    oauth: OAuthServer, store: Store, tmp_path: Path
) -> None:
    oauth.ttl = 1  # every call needs a fresh token
    auth = {"type": "oauth2_refresh_token", "client_id": "app", "refresh_token": {"env": "RT"}}
    process = Process(store, Vault.load(tmp_path))
    target = process.target(oauth, auth)
    try:
        for i in range(3):
            await process.get(target, i)
            await asyncio.sleep(1.0)
    finally:
        await process.runtime.close()
    used = [r["refresh_token"] for r in oauth.token_requests]
    assert used[0] == "rt-initial"
    assert len(set(used)) == 3  # each refresh used the token the previous answer rotated in


async def test_invalid_grant_marks_the_connection_and_stops_calling(
    oauth: OAuthServer, store: Store, tmp_path: Path
) -> None:
    oauth.revoked_client = True
    process = Process(store, Vault.load(tmp_path))
    target = process.target(oauth, CLIENT_CREDENTIALS)
    try:
        for _ in range(5):
            with pytest.raises(FatalError, match=r"needs re-authorisation: .*app access revoked"):
                await process.get(target)
        # A second process sees the mark in the Pipe DB and does not call the endpoint either.
        other = Process(store, Vault.load(tmp_path))
        with pytest.raises(FatalError, match="needs re-authorisation"):
            await other.get(other.target(oauth, CLIENT_CREDENTIALS))
        await other.runtime.close()
    finally:
        await process.runtime.close()
    assert len(oauth.token_requests) == 1
    [row] = await store.tokens.all()
    assert row.state == "needs_reauth"


async def test_jwt_bearer_and_password_grants(
    oauth: OAuthServer, store: Store, tmp_path: Path
) -> None:
    process = Process(store, Vault.load(tmp_path))
    jwt_target = process.target(
        oauth,
        {
            "type": "jwt_bearer",
            "client_id": "consumer-key",
            "username": "integration@toy.test",
            "private_key": {"env": "KEY"},
        },
    )
    password_target = process.target(
        oauth,
        {
            "type": "oauth2_password",
            "client_id": "app",
            "client_secret": {"env": "SECRET"},
            "username": "admin",
            "password": {"env": "PW"},
        },
    )
    try:
        assert (await process.get(jwt_target))["id"] == "1"
        assert (await process.get(password_target))["id"] == "1"
    finally:
        await process.runtime.close()
    grants = [r["grant_type"] for r in oauth.token_requests]
    assert grants == ["urn:ietf:params:oauth:grant-type:jwt-bearer", "password"]


async def test_tokens_are_encrypted_at_rest(oauth: OAuthServer, tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'tokens.db'}"  # a file we can read
    store = await Store.open(database_url)
    process = Process(store, Vault.load(tmp_path))
    try:
        await process.get(process.target(oauth, CLIENT_CREDENTIALS))
    finally:
        await process.runtime.close()
        await store.close()
    [issued] = oauth.valid
    path = Path(database_url.split(":///", 1)[1])
    raw = path.read_bytes() + (
        Path(f"{path}-wal").read_bytes() if Path(f"{path}-wal").exists() else b""
    )
    assert issued.encode() not in raw
    assert b"s3cret" not in raw
