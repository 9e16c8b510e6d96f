"""Zendesk's own Python client (zenpy), pointed at the sandbox, for what UWF uses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter
from zenpy import Zenpy
from zenpy.lib.api_objects import Comment, Organization, Ticket, User

from tests.sandbox_server import RunningSandbox, serve_sandbox

SUBDOMAIN = "uwf-sandbox"


class _ToSandbox(HTTPAdapter):
    """Sends what zenpy addresses to https://uwf-sandbox.zendesk.com to the sandbox instead."""

    def __init__(self, sandbox_url: str) -> None:
        super().__init__()
        self._sandbox_url = sandbox_url

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        assert request.url is not None
        original = request.url
        request.url = original.replace(f"https://{SUBDOMAIN}.zendesk.com", self._sandbox_url)
        response = super().send(request, **kwargs)
        # The client recognises its own URLs in responses: give them back, as a proxy would.
        request.url = original
        response.url = original
        return response


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    with serve_sandbox(Path(tmp_path_factory.mktemp("home"))) as running:
        yield running


@pytest.fixture
def zenpy(sandbox: RunningSandbox) -> Zenpy:
    session = requests.Session()
    session.mount(f"https://{SUBDOMAIN}.zendesk.com", _ToSandbox(sandbox.url))
    creds = sandbox.credentials
    return Zenpy(
        subdomain=SUBDOMAIN, email=creds["email"], token=creds["api_token"], session=session
    )


def test_zenpy_reads_updates_and_comments_a_ticket(zenpy: Zenpy) -> None:
    ticket = zenpy.tickets(id=123)
    assert ticket.priority == "normal"
    ticket.priority = "urgent"
    ticket.comment = Comment(body="from zenpy", public=False)
    zenpy.tickets.update(ticket)

    again = zenpy.tickets(id=123)
    comments = list(zenpy.tickets.comments(ticket=123))
    assert again.priority == "urgent"
    assert [(c.body, c.public) for c in comments][-1] == ("from zenpy", False)


def test_zenpy_searches_users_and_creates_a_ticket(zenpy: Zenpy) -> None:
    [alice] = list(zenpy.users.search(query="email:alice@acme.test"))
    created = zenpy.tickets.create(
        Ticket(subject="Made by zenpy", description="hello", assignee_id=alice.id)
    )
    fetched = zenpy.tickets(id=created.ticket.id)
    assert alice.email == "alice@acme.test"
    assert fetched.subject == "Made by zenpy"
    assert fetched.assignee_id == alice.id


def test_zenpy_upserts_organizations_and_users(zenpy: Zenpy, sandbox: RunningSandbox) -> None:
    org = zenpy.organizations.create_or_update(
        Organization(name="Zenpy Industries", external_id="zenpy-1", notes="first")
    )
    again = zenpy.organizations.create_or_update(
        Organization(name="Zenpy Industries", external_id="zenpy-1", notes="second")
    )
    assert again.id == org.id
    assert zenpy.organizations(id=org.id).notes == "second"
    fields = {f.key for f in zenpy.organization_fields()}
    assert {"account_tier", "renewal_date"} <= fields

    user = zenpy.users.create_or_update(
        User(name="Zed Penny", email="zed@zenpy.test", organization_id=org.id)
    )
    assert (user.role, user.organization_id) == ("end-user", org.id)
    same = zenpy.users.create_or_update(User(email="zed@zenpy.test", phone="+1 555 0142"))
    assert same.id == user.id
    assert zenpy.users(id=user.id).phone == "+1 555 0142"
    with sandbox.client() as client:
        found = client.get("/api/v2/organizations/search.json", params={"name": "zenpy industries"})
    assert [o["id"] for o in found.json()["organizations"]] == [org.id]
