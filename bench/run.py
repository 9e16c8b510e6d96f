"""Raw HTTP clients against UWF end to end, side by side, in one run (`make bench`).

What runs, in order (every server is a child process, stopped by its PID on exit, error or
Ctrl-C):

1. **Raw clients**: the Zendesk sandbox alone, served by uvicorn in a child process (this
   same file with ``--serve-sandbox``). A raw ``httpx.AsyncClient`` loop and a raw
   ``aiohttp.ClientSession`` loop in this process send what ``escalate_case`` sends without
   owner/reason: one ``PUT /api/v2/tickets/{id}.json`` with ``{"ticket": {"priority":
   "high"}}``; at every sandbox latency (``--latency-ms``) and concurrency (``--concurrency``).
2. **UWF end to end**, once per Pipe DB (``--databases``): ``uwf serve`` as a child process
   (API, worker, Pipe DB and its own sandbox), driven by an aiohttp load generator that posts
   ``escalate_case`` actions with ``?wait=30`` and counts an action done when it is
   ``succeeded``; the same latencies (set through the sandbox's ``_control`` between points)
   and concurrencies. PostgreSQL runs on a fresh database, created and dropped by the run.
3. **API accept rate** (bench/_accept.py): a fresh ``uwf serve`` on the embedded default
   gets ``--accept-rate`` actions a second for ``--accept-seconds`` on a fixed schedule,
   without ``wait``; then the run waits until every accepted action is final.

Each point reports throughput, p50/p99 latency and CPU per action: this process's CPU
(``time.process_time``) for the clients, ``/proc/<pid>/stat`` utime+stime for the servers.
bench/README.md explains how to read the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from _accept import accept_rate
from _processes import (
    DEFAULT_PG,
    EXAMPLES,
    ROOT,
    SANDBOX_PREFIX,
    TICKETS,
    UWF,
    Child,
    child_env,
    free_port,
    fresh_database,
    running,
    terminate_like_interrupt,
    without_credentials,
)
from _report import Accept, Point, markdown, percentile, print_progress, ratios

RESULTS = ROOT / "bench" / "results"
UPDATE_BODY = {"ticket": {"priority": "high"}}  # what value_map P2 -> high makes UWF send
WARMUP = 20  # unmeasured calls per point: connections, first-call imports, caches
DATABASES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


# --------------------------------------------------------------------------- servers


def unthrottled_metadata(directory: Path, crm_url: str | None = None) -> Path:
    """acme's metadata with a budget the benchmark cannot reach.

    UWF keeps to Zendesk's published 700 requests a minute by default; the sandbox's own limits
    are off too, so both sides measure bookkeeping, not rate limiting. With `crm_url` the
    connection calls that sandbox (a process of its own) with the token from the environment
    (`BENCH_ZENDESK_TOKEN`), instead of the one `uwf serve` mounts.
    """
    shutil.copytree(EXAMPLES / "acme", directory)
    connection = directory / "acme-zendesk.yaml"
    text = connection.read_text().replace(
        "timeout_seconds: 20\n", "timeout_seconds: 20\nlimits:\n  requests: 100000000\n"
    )
    if crm_url is not None:
        text = text.replace('base_url: "${sandbox:zendesk}"', f'base_url: "{crm_url}"')
        text = text.replace(
            "  token:\n    sandbox: zendesk\n    field: api_token\n",
            "  token: {env: BENCH_ZENDESK_TOKEN}\n",
        )
        if crm_url not in text or "BENCH_ZENDESK_TOKEN" not in text:
            raise RuntimeError("examples/metadata/acme/acme-zendesk.yaml changed shape")
    connection.write_text(text)
    return directory


def serve_sandbox(home: Path, port: int) -> None:
    """The child of part 1: the Zendesk sandbox alone, mounted where UWF mounts it."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from uwf.sandboxes import create_sandbox_app

    sandbox = create_sandbox_app("zendesk", home)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        sandbox.close()

    app = Starlette(routes=[Mount(SANDBOX_PREFIX, app=sandbox)], lifespan=lifespan)
    # The same uvicorn settings as `uwf serve`, so both servers parse HTTP the same way.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=15)


# --------------------------------------------------------------------------- measuring


async def drive(
    n: int, concurrency: int, one: Callable[[int], Awaitable[str | None]]
) -> tuple[list[float], Counter[str]]:
    """Run `one(ticket_id)` n times with `concurrency` workers; None means success."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            ticket = TICKETS[i % len(TICKETS)]
            started = time.perf_counter()
            try:
                error = await one(ticket)
            except (aiohttp.ClientError, httpx.HTTPError, TimeoutError) as exc:
                error = type(exc).__name__
            elapsed_ms = (time.perf_counter() - started) * 1000
            if error is None:
                latencies.append(elapsed_ms)
            else:
                errors[error] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


async def sandbox_stats(base: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{base}{SANDBOX_PREFIX}/_control")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()["stats"]
        return stats


async def configure_sandbox(base: str, latency_ms: int) -> None:
    """Latency as asked; the account and per-ticket rate limits off (a benchmark would hit
    Zendesk's 700/min at once, and that would measure the limiter, not the clients)."""
    settings = {
        "latency_ms": latency_ms,
        "rate_limit_per_minute": 10**9,
        "ticket_update_limit": None,
    }
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{base}{SANDBOX_PREFIX}/_control", json=settings)
        response.raise_for_status()


async def measure(
    system: str,
    client: str,
    where: tuple[int, int, str | None],
    actions: int,
    one: Callable[[int], Awaitable[str | None]],
    server: Child,
    base: str,
    crm: Child | None = None,
) -> Point:
    """One point: `actions` calls of `one` at (concurrency, latency ms, database).

    `base` is where the CRM sandbox answers; `crm`, for UWF's points, its process.
    """
    concurrency, latency_ms, database = where
    await drive(min(WARMUP, actions), concurrency, one)
    before = await sandbox_stats(base)
    crm_cpu = crm.cpu_seconds() if crm is not None else 0.0
    server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
    started = time.perf_counter()
    latencies, errors = await drive(actions, concurrency, one)
    wall = time.perf_counter() - started
    client_cpu, server_cpu = time.process_time() - client_cpu, server.cpu_seconds() - server_cpu
    crm_cpu = crm.cpu_seconds() - crm_cpu if crm is not None else 0.0
    after = await sandbox_stats(base)
    latencies.sort()
    by_status = Counter(after["by_status"])
    by_status.subtract(before["by_status"])
    point = Point(
        system=system,
        client=client,
        concurrency=concurrency,
        latency_ms=latency_ms,
        database=database,
        actions=actions,
        ok=len(latencies),
        errors=dict(errors),
        wall_s=round(wall, 3),
        throughput=round(len(latencies) / wall, 1),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        mean_ms=round(sum(latencies) / len(latencies), 2) if latencies else None,
        client_cpu_ms=round(client_cpu * 1000 / actions, 3),
        server_cpu_ms=round(server_cpu * 1000 / actions, 3),
        crm_requests=after["requests_total"] - before["requests_total"],
        crm_by_status={k: v for k, v in sorted(by_status.items()) if v},
        crm_cpu_ms=round(crm_cpu * 1000 / actions, 3) if crm is not None else None,
    )
    print_progress([point])
    return point


def actions_at(args: argparse.Namespace, concurrency: int) -> int:
    # Concurrency 1 at 50 ms is one call at a time: fewer actions keep the run short.
    return args.actions_serial if concurrency == 1 else args.actions


def basic_auth(home: Path) -> str:
    from uwf.sandboxes import sandbox_credentials

    creds = sandbox_credentials(home, "zendesk")
    token = base64.b64encode(f"{creds['email']}/token:{creds['api_token']}".encode()).decode()
    return f"Basic {token}"


async def raw_points(
    args: argparse.Namespace, sandbox: Child, base: str, home: Path
) -> list[Point]:
    """Part 1: the bare CRM call, with each client, against the sandbox-only process."""
    # Both clients send what UWF's connector sends: Basic auth, JSON in, JSON out.
    headers = {"Authorization": basic_auth(home), "Accept": "application/json"}
    url = f"{base}{SANDBOX_PREFIX}/api/v2/tickets/{{}}.json"
    points = []
    for latency in args.latency_ms:
        await configure_sandbox(base, latency)
        for concurrency in args.concurrency:
            where, n = (concurrency, latency, None), actions_at(args, concurrency)
            async with httpx.AsyncClient(headers=headers, timeout=30) as hx:

                async def httpx_put(ticket: int, hx: httpx.AsyncClient = hx) -> str | None:
                    response = await hx.put(url.format(ticket), json=UPDATE_BODY)
                    response.json()
                    return None if response.status_code == 200 else str(response.status_code)

                points.append(await measure("raw", "httpx", where, n, httpx_put, sandbox, base))
            # The connector's own session settings (uwf.connectors.runtime).
            connector = aiohttp.TCPConnector(limit=100, ttl_dns_cache=300)
            async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

                async def aiohttp_put(
                    ticket: int, s: aiohttp.ClientSession = session
                ) -> str | None:
                    async with s.put(url.format(ticket), json=UPDATE_BODY) as response:
                        await response.json()
                        return None if response.status == 200 else str(response.status)

                points.append(await measure("raw", "aiohttp", where, n, aiohttp_put, sandbox, base))
    return points


async def uwf_points(
    args: argparse.Namespace, serve: Child, base: str, key: str, database: str, crm: Crm
) -> list[Point]:
    """Part 2: escalate_case through `uwf serve`, waiting for each to succeed."""
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{base}/v1/tenants/acme/actions?wait=30"
    points = []
    async with aiohttp.ClientSession(headers=headers) as session:

        async def escalate(ticket: int) -> str | None:
            body = {"workflow": "escalate_case", "input": {"case_id": ticket, "priority": "P2"}}
            async with session.post(url, json=body) as response:
                execution, status = await response.json(), response.status
                location = base + response.headers.get("Location", "")
            deadline = time.monotonic() + 60
            # `wait=30` nearly always returns the final state; poll only if it did not.
            while status == 202 and execution.get("status") in {"queued", "running"}:
                if time.monotonic() > deadline:
                    return "timeout"
                await asyncio.sleep(0.05)
                async with session.get(location) as response:
                    execution, status = await response.json(), response.status
            if execution.get("status") == "succeeded":
                return None
            return f"{status} {execution.get('status') or execution.get('type', '?')}"

        for latency in args.latency_ms:
            await configure_sandbox(crm.base, latency)
            for concurrency in args.concurrency:
                where, n = (concurrency, latency, database), actions_at(args, concurrency)
                point = await measure("uwf", "uwf", where, n, escalate, serve, crm.base, crm.child)
                points.append(point)
    return points


# --------------------------------------------------------------------------- the run


def git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


@dataclass
class Crm:
    """A sandbox-only process: where it answers (`base`, before the mount) and its token."""

    child: Child
    base: str
    token: str


@contextlib.contextmanager
def sandbox_process(tmp: Path, name: str) -> Iterator[Crm]:
    """The Zendesk sandbox alone in a child process (this file with `--serve-sandbox`)."""
    from uwf.sandboxes import sandbox_credentials

    home = tmp / f"{name}-home"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    script = str(Path(__file__).resolve())
    argv = [sys.executable, script, "--serve-sandbox", str(home), "--port", str(port)]
    child = Child(f"sandbox ({name})", argv, child_env(), tmp / f"{name}.log")
    with running(child, f"{base}{SANDBOX_PREFIX}/_control"):
        yield Crm(child, base, sandbox_credentials(home, "zendesk")["api_token"])


@contextlib.contextmanager
def uwf_serve(
    tmp: Path, name: str, database_url: str | None, crm: Crm | None = None, **extra: str
) -> Iterator[tuple[Child, str, str]]:
    """`uwf serve` (API, in-process worker, Pipe DB, sandbox) in a child process of its own:
    (the child, its base URL, its admin key). With `crm`, acme's connection calls that
    sandbox process instead of the mounted one. `extra`: more UWF_* settings."""
    home = tmp / f"{name}-home"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key = "bench-" + secrets.token_urlsafe(16)
    # The load generator is ONE caller, and each caller may make 50 requests a second by
    # default (UWF_API_RATE_LIMIT, per process): lifted, as the connection's budget is, or
    # the run would measure the per-caller limiter (429s), not UWF.
    settings = {
        "api_rate_limit": "1000000",
        "api_rate_burst": "1000000",
        "home": str(home),
        "port": str(port),
        "admin_key": key,
        "metadata_dir": str(
            unthrottled_metadata(tmp / f"{name}-metadata", crm and crm.base + SANDBOX_PREFIX)
        ),
        **extra,
    }
    env = {}
    if crm is not None:
        # A loopback CRM is refused unless allowed (docs/security.md): allow this one only.
        settings["allowed_hosts"] = crm.base.removeprefix("http://")
        env["BENCH_ZENDESK_TOKEN"] = crm.token
    if database_url:
        settings["database_url"] = database_url
    serve = Child(
        f"uwf serve ({name})",
        [str(UWF), "serve"],
        {**child_env(**settings), **env},
        tmp / f"{name}.log",
    )
    with running(serve, f"{base}/healthz"):
        yield serve, base, key


def run_raw(args: argparse.Namespace, tmp: Path) -> list[Point]:
    print("raw clients against the sandbox alone:", file=sys.stderr, flush=True)
    with sandbox_process(tmp, "sandbox") as crm:
        return asyncio.run(raw_points(args, crm.child, crm.base, tmp / "sandbox-home"))


def run_uwf(
    args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack, skipped: dict[str, str]
) -> list[Point]:
    points: list[Point] = []
    for name in args.databases:
        database = DATABASES[name]
        database_url = None
        if name == "postgresql":
            try:
                database_url = stack.enter_context(fresh_database(args.database_url, "uwf_bench"))
            except Exception as exc:  # unreachable, refused, no CREATE DATABASE right, ...
                server = without_credentials(args.database_url)
                reason = f"no fresh database on {server}: {type(exc).__name__}: {exc}"
                skipped[database] = reason.splitlines()[0][:300]
                print(f"PostgreSQL skipped: {skipped[database]}", file=sys.stderr, flush=True)
                continue
        print(f"UWF end to end (uwf serve, {database}):", file=sys.stderr, flush=True)
        with (
            sandbox_process(tmp, f"crm-{name}") as crm,
            uwf_serve(tmp, name, database_url, crm) as (serve, base, key),
        ):
            points += asyncio.run(uwf_points(args, serve, base, key, database, crm))
    return points


def run_accept(args: argparse.Namespace, tmp: Path) -> Accept:
    print(
        f"API accept rate ({args.accept_rate:g}/s for {args.accept_seconds:g} s, SQLite):",
        file=sys.stderr,
        flush=True,
    )
    with uwf_serve(tmp, "accept", None) as (serve, base, key):
        asyncio.run(configure_sandbox(base, 0))
        drain_limit = args.accept_drain_limit
        result = asyncio.run(
            accept_rate(base, key, serve, args.accept_rate, args.accept_seconds, drain_limit)
        )
    print(
        f"  accepted {result.accepted}/{result.scheduled}  p50 {result.p50_ms} ms  "
        f"p99 {result.p99_ms} ms  drain {result.drain_s} s  final {result.final}  "
        f"lost {result.lost}",
        file=sys.stderr,
        flush=True,
    )
    return result


def run(args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> None:
    started = time.monotonic()
    stamp = datetime.now(UTC)
    meta: dict[str, Any] = {
        "utc": stamp.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "commit": git_commit(),
        "databases": [DATABASES[d] for d in args.databases],
        "latency_ms": args.latency_ms,
        "actions": args.actions,
        "actions_serial": args.actions_serial,
        "warmup": WARMUP,
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        # Other work on the machine skews every number; a high value says "run it again".
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "skipped": {},
    }
    points = run_raw(args, tmp)
    points += run_uwf(args, tmp, stack, meta["skipped"])
    meta["databases_run"] = sorted({p.database for p in points if p.database}) or ["none"]
    accept = run_accept(args, tmp) if args.accept_seconds > 0 else None
    meta["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    meta["duration_s"] = round(time.monotonic() - started, 1)
    rows = ratios(points)
    report = markdown(meta, points, rows, accept)
    sys.stdout.write(report)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    name = stamp.strftime("%Y%m%dT%H%M%SZ")
    (args.output_dir / f"{name}.md").write_text(report)
    data = {
        "meta": meta,
        "points": [asdict(p) for p in points],
        "ratios": rows,
        "accept": None if accept is None else {**asdict(accept), "ok": accept.ok},
    }
    (args.output_dir / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {args.output_dir / name}.md and .json in {meta['duration_s']} s", file=sys.stderr)


# --------------------------------------------------------------------------- main


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError("values must be integers >= 0")
    return values


def database_list(text: str) -> list[str]:
    values = [v.strip().lower() for v in text.split(",") if v.strip()]
    unknown = [v for v in values if v not in DATABASES]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"databases are {', '.join(DATABASES)}: {text!r}")
    return list(dict.fromkeys(values))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add(
        "--concurrency",
        type=int_list,
        default=[1, 16, 64],
        help="comma-separated concurrency levels (default: 1,16,64)",
    )
    add(
        "--latency-ms",
        type=int_list,
        default=[0, 50],
        help="comma-separated sandbox response latencies, set through _control (default: 0,50)",
    )
    add(
        "--databases",
        type=database_list,
        default=["sqlite", "postgresql"],
        help="Pipe DBs for `uwf serve` (default: sqlite,postgresql)",
    )
    add(
        "--database-url",
        default=DEFAULT_PG,
        help="the PostgreSQL server: a fresh database is created on it for the run and dropped "
        f"afterwards (default: {DEFAULT_PG})",
    )
    add("--actions", type=int, default=200, help="measured actions per point (default: 200)")
    add(
        "--actions-serial",
        type=int,
        default=100,
        help="measured actions per point at concurrency 1 (default: 100)",
    )
    add(
        "--accept-rate",
        type=float,
        default=300.0,
        help="API accept rate: actions per second on a fixed schedule (default: 300)",
    )
    add(
        "--accept-seconds",
        type=float,
        default=10.0,
        help="API accept rate: how long to send (default: 10; 0 skips the part)",
    )
    add(
        "--accept-drain-limit",
        type=float,
        default=300.0,
        help="API accept rate: how long to wait for every accepted action to be final "
        "(default: 300 s)",
    )
    add(
        "--output-dir",
        type=Path,
        default=RESULTS,
        help="where <UTC timestamp>.md and .json go (default: bench/results)",
    )
    add("--serve-sandbox", type=Path, metavar="HOME", help=argparse.SUPPRESS)
    add("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.actions < 1 or args.actions_serial < 1:
        parser.error("--actions and --actions-serial must be >= 1")
    if 0 in args.concurrency:
        parser.error("--concurrency values must be >= 1")
    if args.accept_rate <= 0 or args.accept_seconds < 0 or args.accept_drain_limit <= 0:
        parser.error("--accept-rate and --accept-drain-limit must be > 0, --accept-seconds >= 0")
    if not args.database_url.startswith("postgres"):
        parser.error("--database-url must be a PostgreSQL URL")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_sandbox is not None:
        serve_sandbox(args.serve_sandbox, args.port)
        return 0
    signal.signal(signal.SIGTERM, terminate_like_interrupt)
    try:
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="uwf-bench-")))
            run(args, tmp, stack)
    except KeyboardInterrupt:
        print("interrupted; every child process was stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
