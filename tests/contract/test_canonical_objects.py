"""One suite over every connector's accounts, contacts and comments.

For each built-in connector that declares a canonical `account` or `contact` object (and has a
sandbox and an example connection), the same round trip runs through the connector spec alone:
the canonical fields written by `create` read back through `get` in canonical form, an
`update` is seen by the next `get`, and `lookup` finds the record by its canonical criteria.
A create sent twice with the same step key makes one record: by nature (an upsert on the step
key, an idempotency key), or, for a CRM with neither, because the record carries the step key
and the engine looks for it (`verify`) before sending again a write whose answer was lost.

For each connector that declares a canonical `comment`, a note added to a new case through the
case's `add_comment` is found by `comment.lookup` on that case, in canonical form, once.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES
from tests.sandbox_server import serve_sandbox
from uwf.connectors import ObjectSpec, builtin_connectors
from uwf.connectors.runtime import Target
from uwf.metadata import load_directory
from uwf.sandboxes import SANDBOXES
from uwf.sandboxes._dynamics_records import guid as dynamics_guid
from uwf.service import make_executor
from uwf.settings import Settings
from uwf.store import Store

# What each object is created with, how it is changed, and what finds it again. Only the
# fields an object declares are written: a CRM without account phones (Freshdesk) or with one
# name per contact instead of first and last (Freshdesk) writes what it has.
SAMPLES: dict[str, dict[str, Any]] = {
    "account": {
        "create": {"name": "Contract Test Ltd {tag}", "phone": "+44 20 7946 0999"},
        "update": {"phone": "+44 20 7946 0111", "description": "Updated by the contract suite"},
        "criteria": {"name": "Contract Test Ltd {tag}"},
    },
    "contact": {
        "create": {
            "first_name": "Dana",
            "last_name": "Scully {tag}",
            "name": "Dana Scully {tag}",
            "email": "dana.{tag}@fbi.test",
        },
        "update": {"phone": "+1 202 555 0143"},
        "criteria": {"email": "dana.{tag}@fbi.test"},
    },
}

# What a CRM requires of a new case beyond its subject and description: Dataverse refuses a
# case without a customer, so it gets one of the sandbox's seeded accounts; a Freshdesk ticket
# needs a requester (an email address of a seeded contact).
CASE_REQUIRES: dict[str, dict[str, Any]] = {
    "dynamics": {"customerid_account@odata.bind": f"/accounts({dynamics_guid('account', 0)})"},
    "freshdesk": {"email": "dave@customer.test"},
}


def _iso_now() -> str:
    """The time as the engine puts it into an operation's context: ISO-8601 UTC, ms."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cases(objects: Iterable[str]) -> list[tuple[str, str]]:
    examples = load_directory(EXAMPLES)
    with_connection = {c.connector for c in examples.connections.values()}
    return [
        (crm, obj)
        for crm, spec in sorted(builtin_connectors().items())
        if crm in SANDBOXES and crm in with_connection
        for obj in objects
        if obj in spec.objects
    ]


@dataclass
class Crm:
    object_name: str
    target: Target
    obj: ObjectSpec
    executor: Any

    async def call(self, operation: str, context: dict[str, Any]) -> Any:
        spec = self.obj.operations.get(operation)  # type: ignore[call-overload]
        assert spec is not None, f"{self.target.spec.id}: no {operation}"
        if isinstance(context.get("fields"), dict):
            context = {**context, "fields": self.obj.to_native(context["fields"])}
        # The engine gives every attempt its time (HubSpot notes need it as `hs_timestamp`).
        context = {"now": _iso_now(), **context}
        result = await self.executor.runtime.call(self.target, spec, context)
        return self.obj.to_canonical(result.result)

    async def resend(self, operation: str, context: dict[str, Any]) -> Any:
        """Send again as the engine does after a lost answer: a write that is not idempotent
        is looked for with its `verify` first, and only sent if that finds nothing."""
        spec = self.obj.operations.get(operation)  # type: ignore[call-overload]
        assert spec is not None, f"{self.target.spec.id}: no {operation}"
        if spec.is_idempotent:
            return await self.call(operation, context)
        assert spec.verify is not None, f"{self.target.spec.id}: {operation} cannot be resent"
        native = {**context, "fields": self.obj.to_native(context["fields"])}
        found, _ = await self.executor.runtime.verify(self.target, spec.verify, native)
        assert found is not None, f"{self.target.spec.id}: verify misses the first {operation}"
        return self.obj.to_canonical(found)

    def declared(self, values: dict[str, Any]) -> dict[str, Any]:
        """The sample values of the fields this object declares."""
        return {k: v for k, v in values.items() if k in self.obj.fields}


@asynccontextmanager
async def _connect(name: str, obj_name: str, tmp_path: Path) -> AsyncIterator[Crm]:
    bundle = load_directory(EXAMPLES)
    [connection] = [c for c in bundle.connections.values() if c.connector == name]
    with serve_sandbox(tmp_path / "home", name) as sandbox:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'uwf.db'}")
        version, _ = await store.apply_metadata(bundle, "contract")
        executor = make_executor(Settings(home=sandbox.home), store, sandbox.url.rsplit("/", 1)[0])
        try:
            target = await executor.targets.resolve(version, bundle, connection)
            yield Crm(obj_name, target, target.spec.objects[obj_name], executor)
        finally:
            await executor.runtime.close()
            await store.close()


@pytest.fixture(params=_cases(SAMPLES), ids=lambda case: f"{case[0]}-{case[1]}")
async def crm(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Crm]:
    async with _connect(*request.param, tmp_path) as connected:
        yield connected


@pytest.fixture(params=[crm for crm, _ in _cases(["comment"])])
async def comments(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Crm]:
    async with _connect(request.param, "comment", tmp_path) as connected:
        yield connected


def _fill(values: dict[str, Any], tag: str) -> dict[str, Any]:
    return {k: v.format(tag=tag) if isinstance(v, str) else v for k, v in values.items()}


async def test_create_get_update_lookup(crm: Crm) -> None:
    sample = SAMPLES[crm.object_name]
    tag = secrets.token_hex(3)
    written = crm.declared(_fill(sample["create"], tag))
    step_key = f"contract-{tag}:create"

    created = await crm.call("create", {"fields": written, "step_key": step_key})
    record_id = created["id"]
    assert record_id

    got = await crm.call("get", {"record_id": record_id})
    assert {k: got[k] for k in written} == written
    assert got["native"]  # the CRM's own record rides along

    changes = crm.declared(_fill(sample["update"], tag))
    assert changes, f"{crm.target.spec.id}: declares none of {sorted(sample['update'])}"
    await crm.call("update", {"record_id": record_id, "fields": changes})
    got = await crm.call("get", {"record_id": record_id})
    assert {k: got[k] for k in {**written, **changes}} == {**written, **changes}

    found = await crm.call("lookup", {"criteria": _fill(sample["criteria"], tag)})
    assert [str(r["id"]) for r in found] == [str(record_id)]

    # Sent again with the same step key (a response lost), the create makes no second record.
    again = await crm.resend("create", {"fields": written, "step_key": step_key})
    assert str(again["id"]) == str(record_id)
    found = await crm.call("lookup", {"criteria": _fill(sample["criteria"], tag)})
    assert len(found) == 1


async def test_comment_lookup(comments: Crm) -> None:
    """An internal note added through the case's `add_comment` is listed by `comment.lookup`."""
    tag = secrets.token_hex(3)
    case = Crm("case", comments.target, comments.target.spec.objects["case"], comments.executor)
    created = await case.call(
        "create",
        {
            "fields": {
                "subject": f"Comment contract {tag}",
                "description": "Printer on fire",
                **CASE_REQUIRES.get(comments.target.spec.id, {}),
            },
            "step_key": f"contract-{tag}:case",
        },
    )
    case_id = created["id"]
    text = f"Escalated: contract {tag}"
    await case.call(
        "add_comment",
        {"record_id": case_id, "body": text, "public": False, "step_key": f"contract-{tag}:note"},
    )

    found = await comments.call("lookup", {"criteria": {"case_id": case_id}})
    mine = [c for c in found if text in str(c["body"])]
    assert len(mine) == 1, found
    [note] = mine
    assert note["id"]
    assert str(note["case_id"]) == str(case_id)
    assert note["public"] is False
    assert note["native"]
