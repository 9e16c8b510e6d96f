"""HubSpot sandbox seed data: owners, tickets and their notes, companies and contacts.

Everything follows from fixed ids and `SEED_EPOCH`, so every new database holds the same
records (docs/crms/hubspot.md lists them).
"""

from __future__ import annotations

import sqlite3

from uwf.sandboxes._common import utc_iso
from uwf.sandboxes._hubspot_records import (
    CATEGORIES,
    PRIORITIES,
    SEED_EPOCH,
    STAGES,
    associate,
    iso_ms,
    save_object,
)
from uwf.sandboxes._store import get_meta, set_meta

__all__ = ["QUICKSTART_TICKET", "seed", "upgrade"]

ADMIN_EMAIL = "admin@uwf-sandbox.test"
QUICKSTART_TICKET = 1123
# (owner id, user id, email, first name, last name, archived): owner ids and user ids differ
# in HubSpot, and `hubspot_owner_id` holds the owner id.
OWNERS = (
    (41000001, 9000001, ADMIN_EMAIL, "Sandbox", "Admin", 0),
    (41000002, 9000002, "alice@acme.test", "Alice", "Agent", 0),
    (41000003, 9000003, "bob@acme.test", "Bob", "Agent", 0),
    (41000004, 9000004, "carol@acme.test", "Carol", "Agent", 0),
    (41000005, 9000005, "dan@acme.test", "Dan", "Former", 1),
)
# Seeded companies: (id, name, domain, phone, industry, country, city, owner index or None).
COMPANIES = (
    (6101, "Acme Corporation", "acme.test", "+1 415 555 0100", "COMPUTER_SOFTWARE",
     "United States", "San Francisco", 0),
    (6102, "Globex Ltd", "globex.test", "+44 20 7946 0000", "MANAGEMENT_CONSULTING",
     "United Kingdom", "London", 1),
    (6103, "Initech GmbH", "initech.test", "+49 30 9018 2000",
     "INFORMATION_TECHNOLOGY_AND_SERVICES", "Germany", "Berlin", None),
    (6104, "Umbrella Health", "umbrella.test", "+1 312 555 0142", "HOSPITAL_HEALTH_CARE",
     "United States", "Chicago", 2),
    (6105, "Contoso Retail", "contoso.test", "+33 1 70 36 39 50", "RETAIL", "France", "Paris", 0),
    (6106, "Hooli Logistics", "hooli.test", "+61 2 5550 1234", "LOGISTICS_AND_SUPPLY_CHAIN",
     "Australia", "Sydney", None),
)  # fmt: skip
# Seeded contacts: (id, first name, last name, job title, primary company id or None).
CONTACTS = (
    (7101, "Wile", "Coyote", "Head of Procurement", 6101),
    (7102, "Road", "Runner", "IT Manager", 6101),
    (7103, "Hank", "Scorpio", "CEO", 6102),
    (7104, "Peter", "Gibbons", "Software Engineer", 6103),
    (7105, "Milton", "Waddams", "Collator", 6103),
    (7106, "Alice", "Abernathy", "Chief Medical Officer", 6104),
    (7107, "Gavin", "Belson", "Operations Lead", 6106),
    (7108, "Erlich", "Bachman", None, None),
)  # fmt: skip
TOPICS = ("Printer is offline", "Cannot log in", "Refund request", "Invoice missing",
          "Shipping delay", "Password reset", "Export fails", "Dark mode request")  # fmt: skip


def seed(conn: sqlite3.Connection) -> None:
    """Owners, 60 tickets (1101–1160) whose fields follow from their id, some notes, six
    companies and eight contacts.

    Ticket 1123 is the quickstart record: New, MEDIUM, no owner, no notes.
    """
    creds = get_meta(conn, "credentials") or {}
    if creds.get("refresh_token"):  # the dev OAuth installation's refresh token
        conn.execute("INSERT INTO oauth_refresh_tokens VALUES (?, 0)", (creds["refresh_token"],))
    at = iso_ms(SEED_EPOCH)
    conn.executemany("INSERT INTO owners VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     [(*owner, at, at) for owner in OWNERS])  # fmt: skip
    agents = [str(owner[0]) for owner in OWNERS[1:4]]
    for ticket_id in range(1101, 1161):
        quickstart = ticket_id == QUICKSTART_TICKET
        topic = TOPICS[ticket_id % len(TOPICS)]
        props: dict[str, str | None] = {
            "subject": f"{topic} #{ticket_id}",
            "content": f"Hi, {topic.lower()}. Details for seed ticket {ticket_id}.",
            "hs_pipeline": "0",
            "hs_pipeline_stage": "1" if quickstart else STAGES[ticket_id % 4][0],
            "hs_ticket_priority": "MEDIUM" if quickstart else (*PRIORITIES, None)[ticket_id % 5],
            "hs_ticket_category": CATEGORIES[ticket_id % 4] if ticket_id % 3 else None,
            "hubspot_owner_id": None if quickstart or ticket_id % 3 == 0 else agents[ticket_id % 3],
        }
        created = SEED_EPOCH + (ticket_id - 1100) * 3600
        save_object(conn, "tickets", None, props, at=created, object_id=ticket_id)
        if props["hs_pipeline_stage"] in ("2", "3") and not quickstart:
            note = {"hs_note_body": f"Called the customer about #{ticket_id}.",
                    "hs_timestamp": iso_ms(created + 600),
                    "hubspot_owner_id": agents[0]}  # fmt: skip
            note_id = 8000 + ticket_id - 1100
            save_object(conn, "notes", None, note, at=created + 600, object_id=note_id)
            associate(conn, "notes", note_id, "tickets", ticket_id)
    _seed_companies_and_contacts(conn, agents)
    set_meta(conn, "companies_seeded", utc_iso())


def upgrade(conn: sqlite3.Connection) -> None:
    """A file seeded before companies and contacts existed gains them, once."""
    if get_meta(conn, "companies_seeded") is not None:
        return
    _seed_companies_and_contacts(conn, [str(owner[0]) for owner in OWNERS[1:4]])
    set_meta(conn, "companies_seeded", utc_iso())


def _seed_companies_and_contacts(conn: sqlite3.Connection, agents: list[str]) -> None:
    """Six companies (6101–6106) and eight contacts (7101–7108), most with a primary company."""
    domains = {company[0]: company[2] for company in COMPANIES}
    for n, (company_id, name, domain, phone, industry, country, city, owner) in enumerate(
        COMPANIES
    ):
        props: dict[str, str | None] = {
            "name": name, "domain": domain, "website": f"https://www.{domain}", "phone": phone,
            "industry": industry, "country": country, "city": city,
            "description": f"{name}, a seeded customer.",
            "numberofemployees": str(50 * (n + 1)),
            "hubspot_owner_id": None if owner is None else agents[owner],
        }  # fmt: skip
        save_object(conn, "companies", None, props, at=SEED_EPOCH - 86400 + n * 60,
                    object_id=company_id)  # fmt: skip
    for n, (contact_id, first, last, title, primary) in enumerate(CONTACTS):
        domain = domains.get(primary or 0, "aviato.test")
        props = {
            "firstname": first, "lastname": last, "email": f"{first}.{last}@{domain}".lower(),
            "phone": f"+1 202 555 01{n:02d}",
            "mobilephone": None if n % 2 else f"+1 202 555 02{n:02d}",
            "jobtitle": title, "lifecyclestage": "customer" if primary else "lead",
            "associatedcompanyid": None if primary is None else str(primary),
        }  # fmt: skip
        save_object(conn, "contacts", None, props, at=SEED_EPOCH - 43200 + n * 60,
                    object_id=contact_id)  # fmt: skip
