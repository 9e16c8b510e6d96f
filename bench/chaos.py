"""Chaos harness: actions through worker processes that keep getting SIGKILLed, audited in the CRM.

What runs (every process is a child of this script, stopped by its PID on exit, error or
Ctrl-C):

1. A PostgreSQL Pipe DB: ``--database-url``, or by default a fresh database created on
   ``postgresql://postgres@127.0.0.1:5432/test`` and dropped afterwards.
2. ``uwf serve --no-worker`` (API and the Zendesk sandbox at ``/sandbox/zendesk``) and
   ``--workers`` ``uwf worker`` processes, all with ``UWF_LEASE_SECONDS=5`` so that a killed
   worker's executions are claimed again within seconds.
3. The sandbox misbehaves through ``_control``: injected 429s and 503s, latency, and responses
   cut after the write was committed.
4. ``--actions`` ``escalate_case`` actions for tenant ``acme``, each with its own
   ``Idempotency-Key`` and a unique ``reason`` (hence a unique private comment), spread over
   the open seeded tickets. Every ``--kill-every`` seconds a random worker is SIGKILLed and a
   replacement started.
5. When every accepted action is final (or ``--duration-limit`` passes) the workers are
   stopped, the faults switched off and the sandbox's own Zendesk API audited: every ticket's
   comments are listed and counted per reason text.

It prints a summary table and exits 1 when an action was lost, a CRM effect was duplicated or
a succeeded action left no comment. bench/README.md ("Chaos harness") explains the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from _chaos_report import Report, markdown
from _processes import (
    DEFAULT_PG,
    EXAMPLES,
    SANDBOX_PREFIX,
    TICKETS,
    UWF,
    Child,
    child_env,
    free_port,
    fresh_database,
    terminate_like_interrupt,
    without_credentials,
)

OWNERS = ("alice@acme.test", "bob@acme.test", "carol@acme.test")  # seeded Zendesk agents
FINAL = frozenset({"succeeded", "failed", "dead", "cancelled"})
LEASE_SECONDS = "5"


# --------------------------------------------------------------------------- the run


@dataclass
class Action:
    index: int
    key: str  # Idempotency-Key
    reason: str  # unique: the comment "Escalated: <reason>" identifies this action in the CRM
    input: dict[str, Any]
    id: str | None = None  # the execution, once accepted
    status: str | None = None
    error: dict[str, Any] | None = None
    comments: int = 0  # comments with this action's text, found by the audit

    @property
    def body(self) -> str:
        return f"Escalated: {self.reason}"


class Chaos:
    def __init__(self, args: argparse.Namespace, database_url: str, tmp: Path) -> None:
        self.args = args
        self.database_url = database_url
        self.tmp = tmp
        self.rng = random.Random(args.seed)
        self.run_id = secrets.token_hex(4)
        self.home = tmp / "home"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.key = "chaos-" + secrets.token_urlsafe(16)
        self.env = child_env(
            home=str(self.home),
            port=str(self.port),
            admin_key=self.key,
            database_url=database_url,
            metadata_dir=str(EXAMPLES),
            lease_seconds=LEASE_SECONDS,
            poll_interval="0.05",
            drain_seconds="5",
            worker_concurrency=str(args.worker_concurrency),
            log_level=args.uwf_log_level,
        )
        self.children: list[Child] = []  # every process ever started, for the final cleanup
        self.workers: list[Child] = []  # the current ones
        self.serve: Child | None = None
        self.actions = [self._action(i) for i in range(args.actions)]
        self.report = Report(
            run_id=self.run_id,
            seed=args.seed,
            database=without_credentials(database_url),
            actions=args.actions,
            workers=args.workers,
            kill_every_s=args.kill_every,
            faults={
                "latency_ms": args.latency_ms,
                "error_rates": {"429": args.error_429, "503": args.error_503},
                "drop_after_write_rate": args.drop,
            },
            crm_limits="enforced" if args.crm_limits else "disabled",
        )

    def _action(self, i: int) -> Action:
        reason = f"chaos {self.run_id} #{i}"
        body: dict[str, Any] = {
            "case_id": TICKETS[i % len(TICKETS)],
            "priority": self.rng.choice(("P1", "P2", "P3", "P4")),
            "reason": reason,
        }
        if self.rng.random() < 1 / 3:  # some actions also look up an agent and reassign
            body["owner_email"] = self.rng.choice(OWNERS)
        return Action(i, f"chaos-{self.run_id}-{i}", reason, body)

    # -- processes

    def _start(self, name: str, *argv: str) -> Child:
        child = Child(name, [str(UWF), *argv], self.env, self.tmp / f"{name}.log").start()
        self.children.append(child)
        return child

    def start_worker(self) -> None:
        self.report.worker_starts += 1
        self.workers.append(self._start(f"worker-{self.report.worker_starts}", "worker"))

    def start_serve(self) -> None:
        self.serve = self._start("serve", "serve", "--no-worker")
        self.serve.wait_ready(f"{self.base}/healthz")

    def stop_all(self) -> None:
        """Stop every process this run started, by PID: workers first (they drain), then serve."""
        for child in self.children:
            if child is not self.serve:
                child.terminate()
        for child in self.children:
            if child is not self.serve:
                child.stop()
        if self.serve is not None:
            self.serve.stop()

    def check_workers(self) -> None:
        """Replace workers that exited without being killed by us (and count them: a crash)."""
        for worker in list(self.workers):
            if not worker.alive():
                self.report.unexpected_exits += 1
                print(
                    f"! {worker.name} exited by itself:\n{worker.log_tail()}",
                    file=sys.stderr,
                    flush=True,
                )
                self.workers.remove(worker)
                self.start_worker()

    # -- the sandbox

    async def control(self, client: httpx.AsyncClient, **settings: Any) -> dict[str, Any]:
        if settings:
            response = await client.post(f"{SANDBOX_PREFIX}/_control", json=settings)
        else:
            response = await client.get(f"{SANDBOX_PREFIX}/_control")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def configure_faults(self, client: httpx.AsyncClient) -> None:
        defaults = await self.control(client)
        self.report.zendesk_limit_per_minute = defaults["settings"]["rate_limit_per_minute"]
        settings: dict[str, Any] = {
            "latency_ms": self.args.latency_ms,
            "error_rates": {"429": self.args.error_429, "503": self.args.error_503},
            "drop_after_write_rate": self.args.drop,
            "seed": self.args.seed,
        }
        if not self.args.crm_limits:
            # Only the injected faults: Zendesk's 700 requests/minute and 30 updates per
            # ticket per 10 minutes would otherwise be hit within a minute (and then dominate).
            settings |= {"rate_limit_per_minute": 10**9, "ticket_update_limit": None}
        await self.control(client, **settings)

    # -- submitting and watching

    async def submit(self, api: httpx.AsyncClient, action: Action) -> None:
        """POST the action, retrying with the same Idempotency-Key until it is accepted."""
        body = {"workflow": "escalate_case", "input": action.input}
        for attempt in range(200):
            try:
                response = await api.post(
                    "/v1/tenants/acme/actions", json=body, headers={"Idempotency-Key": action.key}
                )
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code in (200, 202):
                action.id = response.json()["id"]
                if response.headers.get("Idempotent-Replayed") == "true":
                    self.report.idempotent_replays += 1
                return
            if response is not None and response.status_code == 429:
                # The API's per-caller rate limit: wait as told, then send it again.
                self.report.api_throttled += 1
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            if response is not None and response.status_code < 500:
                detail = response.text[:300]
                print(f"! action {action.index} refused: {detail}", file=sys.stderr)
                return
            await asyncio.sleep(min(2.0, 0.1 * 2**attempt))

    async def submit_all(self, api: httpx.AsyncClient) -> None:
        queue = iter(self.actions)
        rate = self.args.submit_rate
        started = time.monotonic()

        async def submitter() -> None:
            for action in queue:
                if rate:  # paced: action i goes out at i / rate seconds
                    await asyncio.sleep(max(0.0, started + action.index / rate - time.monotonic()))
                await self.submit(api, action)

        await asyncio.gather(*(submitter() for _ in range(8)))

    async def statuses(self, api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
        """Every execution of tenant acme in the Pipe DB, by id (newest first, 200 a page)."""
        found: dict[str, dict[str, Any]] = {}
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 200}
            if cursor:
                params["cursor"] = cursor
            response = await api.get("/v1/tenants/acme/executions", params=params)
            response.raise_for_status()
            page = response.json()
            for item in page["items"]:
                found[item["id"]] = item
            cursor = page["next_cursor"]
            if not cursor:
                return found

    def apply(self, found: dict[str, dict[str, Any]]) -> None:
        for action in self.actions:
            item = found.get(action.id or "")
            if item is not None:
                action.status, action.error = item["status"], item["error"]

    async def killer(self, done: asyncio.Event) -> None:
        every = self.args.kill_every
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=every or 0.5)
                return
            self.check_workers()
            if not every:
                continue
            victim = self.rng.choice(self.workers)
            victim.sigkill()
            self.workers.remove(victim)
            self.report.kills += 1
            self.start_worker()

    async def watch(self, api: httpx.AsyncClient, submitting: asyncio.Task[None]) -> None:
        started = time.monotonic()
        last_line = 0.0
        while True:
            await asyncio.sleep(1.0)
            try:
                self.apply(await self.statuses(api))
            except httpx.HTTPError as exc:
                print(f"! listing executions failed: {exc!r}", file=sys.stderr)
                continue
            accepted = [a for a in self.actions if a.id]
            final = Counter(a.status for a in accepted if a.status in FINAL)
            elapsed = time.monotonic() - started
            if time.monotonic() - last_line >= 5:
                last_line = time.monotonic()
                print(
                    f"  {elapsed:5.0f} s  accepted {len(accepted)}/{len(self.actions)}  "
                    f"final {sum(final.values())} {dict(final)}  kills {self.report.kills}",
                    file=sys.stderr,
                    flush=True,
                )
            if submitting.done() and sum(final.values()) == len(accepted):
                self.report.time_to_final_s = round(elapsed, 1)
                return
            if elapsed > self.args.duration_limit:
                self.report.timed_out = True
                return

    @staticmethod
    def uwf_budget(connection: str) -> tuple[int | None, float]:
        """The budget UWF's governor keeps for `connection` (its own or its connector's)."""
        from uwf.connectors import builtin_connectors
        from uwf.metadata import load_directory

        spec = load_directory(EXAMPLES).connections[connection]
        limits = spec.limits or builtin_connectors()[spec.connector].limits
        return limits.requests, limits.window_seconds

    # -- the audit

    async def comments(self, crm: httpx.AsyncClient, ticket: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            response = await crm.get(
                f"{SANDBOX_PREFIX}/api/v2/tickets/{ticket}/comments.json",
                params={"per_page": 100, "page": page},
            )
            response.raise_for_status()
            body = response.json()
            out += body["comments"]
            if not body.get("next_page"):
                return out
            page += 1

    async def audit(self, crm: httpx.AsyncClient) -> None:
        tickets = sorted({int(a.input["case_id"]) for a in self.actions})
        limiter = asyncio.Semaphore(8)

        async def one(ticket: int) -> list[dict[str, Any]]:
            async with limiter:
                return await self.comments(crm, ticket)

        found = await asyncio.gather(*(one(t) for t in tickets))
        prefix = f"Escalated: chaos {self.run_id} #"
        by_body: dict[str, list[dict[str, Any]]] = {}
        for comment in (c for batch in found for c in batch):
            if str(comment.get("body", "")).startswith(prefix):
                by_body.setdefault(comment["body"], []).append(comment)
        r = self.report
        known = set()
        for action in self.actions:
            if action.id is None:
                continue
            known.add(action.body)
            matches = by_body.get(action.body, [])
            action.comments = len(matches)
            if len(matches) > 1:
                r.duplicates += 1
                r.extra_comments += len(matches) - 1
                r.duplicate_reasons.append(action.reason)
            if action.status == "succeeded" and not matches:
                r.succeeded_without_effect += 1
            for comment in matches:
                step_key = ((comment.get("metadata") or {}).get("custom") or {}).get(
                    "uwf_step_key", ""
                )
                if not str(step_key).startswith(f"{action.id}:"):
                    r.foreign_step_keys += 1
        r.orphan_comments = sum(len(v) for body, v in by_body.items() if body not in known)

    # -- the whole run

    async def run(self) -> Report:
        started = time.monotonic()
        headers = {"Authorization": f"Bearer {self.key}"}
        async with (
            httpx.AsyncClient(base_url=self.base, timeout=30) as plain,
            httpx.AsyncClient(base_url=self.base, headers=headers, timeout=30) as api,
        ):
            await self.configure_faults(plain)
            for _ in range(self.args.workers):
                self.start_worker()
            print(
                f"run {self.run_id}: {self.args.actions} actions, {self.args.workers} workers, "
                f"a SIGKILL every {self.args.kill_every} s, seed {self.args.seed}",
                file=sys.stderr,
                flush=True,
            )
            done = asyncio.Event()
            submitting = asyncio.create_task(self.submit_all(api))
            killing = asyncio.create_task(self.killer(done))
            try:
                await self.watch(api, submitting)
            finally:
                done.set()
                await killing
                if not submitting.done():
                    submitting.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await submitting
            self.check_workers()
            stats = await self.control(plain)
            self.report.crm_stats = stats["stats"]
            # Stop the workers (they drain and release what they hold), then read the final
            # statuses: nothing can change them any more.
            for worker in self.workers:
                worker.terminate()
            for worker in self.workers:
                worker.stop()
            self.apply(await self.statuses(api))
            budget = self.uwf_budget(self.report.connection)
            self.report.budget_requests, self.report.budget_window_s = budget
            await self.control(
                plain, latency_ms=0, error_rates={}, drop_after_write_rate=0.0
            )  # the audit itself must not be faulted
            from uwf.sandboxes import sandbox_credentials

            creds = sandbox_credentials(self.home, "zendesk")
            async with httpx.AsyncClient(
                base_url=self.base,
                auth=(f"{creds['email']}/token", creds["api_token"]),
                timeout=30,
            ) as crm:
                await self.audit(crm)
        self.summarise()
        self.report.wall_s = round(time.monotonic() - started, 1)
        return self.report

    def summarise(self) -> None:
        r = self.report
        accepted = [a for a in self.actions if a.id]
        r.accepted = len(accepted)
        r.not_accepted = len(self.actions) - len(accepted)
        statuses = Counter(a.status for a in accepted)
        r.succeeded, r.failed = statuses["succeeded"], statuses["failed"]
        r.dead, r.cancelled = statuses["dead"], statuses["cancelled"]
        lost = [a for a in accepted if a.status not in FINAL]
        r.lost = len(lost)
        r.lost_ids = [f"{a.id} ({a.status or 'missing'})" for a in lost][:50]
        r.errors = dict(
            Counter(
                f"{a.status}: {(a.error or {}).get('code') or (a.error or {}).get('type', '?')}"
                for a in accepted
                if a.status in ("failed", "dead")
            )
        )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--actions", type=int, default=300, help="actions to submit (default: 300)")
    add("--workers", type=int, default=3, help="`uwf worker` processes (default: 3)")
    add(
        "--kill-every",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="SIGKILL a random worker this often and start a replacement; 0: never (default: 3)",
    )
    add(
        "--duration-limit",
        type=float,
        default=240.0,
        metavar="SECONDS",
        help="give up waiting for every action to be final after this long (default: 240)",
    )
    add("--error-429", type=float, default=0.10, help="injected 429 rate (default: 0.10)")
    add("--error-503", type=float, default=0.05, help="injected 503 rate (default: 0.05)")
    add(
        "--drop",
        type=float,
        default=0.03,
        help="rate of responses cut after the write was committed (default: 0.03)",
    )
    add("--latency-ms", type=int, default=20, help="sandbox response latency (default: 20)")
    add(
        "--crm-limits",
        action="store_true",
        help="keep Zendesk's own limits (700 requests/min, 30 updates per ticket per 10 min); "
        "by default both are lifted so that only the injected faults happen",
    )
    add(
        "--submit-rate",
        type=float,
        default=0.0,
        metavar="PER_SECOND",
        help="pace the submissions (actions per second); 0: as fast as possible (default)",
    )
    add(
        "--worker-concurrency",
        type=int,
        default=16,
        help="UWF_WORKER_CONCURRENCY of each worker (default: 16)",
    )
    add(
        "--database-url",
        default=None,
        help="PostgreSQL URL to use as it is (default: a fresh database on "
        f"{DEFAULT_PG}, dropped afterwards)",
    )
    add("--seed", type=int, default=None, help="seeds kills, inputs and the sandbox's draws")
    add(
        "--log-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep UWF_HOME and every process's log here (default: a temp dir, removed)",
    )
    add("--uwf-log-level", default="warning", help="UWF_LOG_LEVEL of every process")
    add("--json", type=Path, default=None, metavar="PATH", help="also write the report as JSON")
    args = parser.parse_args(argv)
    if args.actions < 1 or args.workers < 1 or args.kill_every < 0 or args.latency_ms < 0:
        parser.error("--actions and --workers must be >= 1, --kill-every and --latency-ms >= 0")
    if not all(0 <= r <= 1 for r in (args.error_429, args.error_503, args.drop)):
        parser.error("fault rates must be between 0 and 1")
    if args.error_429 + args.error_503 > 1:
        parser.error("--error-429 and --error-503 must add up to at most 1")
    if args.database_url and not args.database_url.startswith("postgres"):
        parser.error("--database-url must be a PostgreSQL URL")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(10**6)
    return args


def run(args: argparse.Namespace) -> Report:
    """One chaos run; every process it starts is stopped before it returns or raises."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="uwf-chaos-")))
        if args.log_dir is not None:  # logs and UWF_HOME kept for a post-mortem
            tmp = args.log_dir
            tmp.mkdir(parents=True, exist_ok=True)
        database_url = args.database_url or stack.enter_context(
            fresh_database(DEFAULT_PG, "uwf_chaos")
        )
        chaos = Chaos(args, database_url, tmp)
        try:
            chaos.start_serve()
            return asyncio.run(chaos.run())
        except Exception:
            for child in chaos.children:
                print(f"--- {child.name} (last lines)\n{child.log_tail()}", file=sys.stderr)
            raise
        finally:
            chaos.stop_all()
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, terminate_like_interrupt)
    try:
        report = run(args)
    except KeyboardInterrupt:
        print("interrupted; every child process was stopped", file=sys.stderr)
        return 130
    sys.stdout.write(markdown(report))
    if args.json:
        data = {**asdict(report), "within_budget": report.within_budget, "ok": report.ok}
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
