"""OIDC bearer tokens: a real JWKS served over loopback, tokens signed with test keys."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import EXAMPLES, LiveServer, start_server
from uwf.settings import Settings

AUDIENCE = "uwf-test"


@dataclass
class Issuer:
    url: str
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey

    def token(
        self,
        *,
        key: Any = None,
        kid: str = "rsa-1",
        alg: str = "RS256",
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "user-42",
            "iat": now,
            "exp": now + 600,
            "uwf_tenants": ["acme"],
            "scope": "executions:read actions:write",
            **claims,
        }
        signing = key if key is not None else (self.ec_key if alg == "ES256" else self.rsa_key)
        return jwt.encode(body, signing, algorithm=alg, headers={"kid": kid})


def _jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    """An OpenID provider's discovery document and JWKS, on a loopback port."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = {"keys": [_jwk(rsa_key, "rsa-1", "RS256"), _jwk(ec_key, "ec-1", "ES256")]}
    documents: dict[str, Any] = {"/jwks.json": jwks}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            document = documents.get(self.path)
            body = json.dumps(document).encode()
            self.send_response(200 if document is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    documents["/.well-known/openid-configuration"] = {
        "issuer": url,
        "jwks_uri": f"{url}/jwks.json",
    }
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Issuer(url, rsa_key, ec_key)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def oidc_server(tmp_path: Path, issuer: Issuer) -> Iterator[LiveServer]:
    home = tmp_path / "home"
    key = "test-admin-key-" + secrets.token_hex(8)
    # No JWKS URL given: it is discovered from the issuer's openid-configuration.
    settings = Settings(
        home=home,
        metadata_dir=EXAMPLES,
        poll_interval=0.05,
        oidc_issuer=issuer.url,
        oidc_audience=AUDIENCE,
    )
    server, thread = start_server(settings, key)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", key, home, settings)
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def _get(server: LiveServer, token: str, path: str = "/v1/tenants/acme/executions") -> Any:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        return client.get(path, headers={"Authorization": f"Bearer {token}"})


def test_valid_tokens_act_within_their_tenants_and_scopes(
    oidc_server: LiveServer, issuer: Issuer
) -> None:
    rs256 = issuer.token()
    es256 = issuer.token(alg="ES256", kid="ec-1")
    reader = issuer.token(scope="executions:read")
    everywhere = issuer.token(uwf_tenants="*", scope=["executions:read"])

    with httpx.Client(base_url=oidc_server.base_url, timeout=30) as client:
        accepted = client.post(
            "/v1/tenants/acme/actions",
            json={"workflow": "escalate_case", "input": {"case_id": 7, "priority": "P3"}},
            headers={"Authorization": f"Bearer {rs256}"},
        )
        refused = client.post(
            "/v1/tenants/acme/actions",
            json={"workflow": "escalate_case", "input": {"case_id": 7, "priority": "P3"}},
            headers={"Authorization": f"Bearer {reader}"},
        )
    with oidc_server.client() as admin:
        audit = admin.get("/v1/audit", params={"action": "action.accepted"}).json()["items"]

    assert _get(oidc_server, rs256).status_code == 200
    assert _get(oidc_server, es256).status_code == 200
    assert _get(oidc_server, rs256, "/v1/tenants/globex/executions").status_code == 404
    assert _get(oidc_server, everywhere, "/v1/tenants/globex/executions").status_code == 200
    assert accepted.status_code == 202
    assert refused.status_code == 403
    assert [(r["actor"], r["actor_type"], r["target"]) for r in audit] == [
        ("oidc:user-42", "oidc", accepted.json()["id"])
    ]


def test_bad_tokens_are_401_problems(oidc_server: LiveServer, issuer: Issuer) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    unsigned = jwt.encode(
        {"iss": issuer.url, "aud": AUDIENCE, "sub": "x", "exp": now + 600,
         "uwf_tenants": "*", "scope": "admin"},
        None,
        algorithm="none",
    )  # fmt: skip
    tokens = {
        "expired": issuer.token(exp=now - 3600, iat=now - 7200),
        "wrong audience": issuer.token(aud="someone-else"),
        "wrong issuer": issuer.token(iss="https://evil.example"),
        "unknown kid": issuer.token(key=stranger, kid="rsa-9"),
        "known kid, wrong key": issuer.token(key=stranger),
        "alg none": unsigned,
        "no sub": jwt.encode(
            {"iss": issuer.url, "aud": AUDIENCE, "exp": now + 600},
            issuer.rsa_key,
            algorithm="RS256",
            headers={"kid": "rsa-1"},
        ),
    }
    reasons = {}
    for label, token in tokens.items():
        response = _get(oidc_server, token)
        assert response.status_code == 401, label
        assert response.headers["content-type"] == "application/problem+json", label
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"', label
        reasons[label] = response.json()["detail"]

    assert "expired" in reasons["expired"]
    assert "audience" in reasons["wrong audience"]
    assert "issuer" in reasons["wrong issuer"]
    assert "signing key" in reasons["unknown kid"]
    assert "algorithm" in reasons["alg none"]
