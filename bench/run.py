"""Raw HTTP clients against UWF end to end, side by side, in one run (`make bench`).

What runs, in order (every server is a child process, stopped by its PID on exit, error or
Ctrl-C):

1. The Zendesk sandbox alone, served by uvicorn in a child process (this same file with
   ``--serve-sandbox``). A raw ``httpx.AsyncClient`` loop and a raw ``aiohttp.ClientSession``
   loop in this process send what ``escalate_case`` sends without owner/reason: one
   ``PUT /api/v2/tickets/{id}.json`` with ``{"ticket": {"priority": "high"}}``.
2. ``uwf serve`` as a child process (API, worker, Pipe DB and its own sandbox), driven by an
   aiohttp load generator in this process that posts ``escalate_case`` actions with
   ``?wait=30`` and counts an action done when it is ``succeeded``.

Each point reports throughput, p50/p99 latency and CPU per action: this process's CPU
(``time.process_time``) for the clients, ``/proc/<pid>/stat`` utime+stime for the servers.
bench/README.md explains how to read the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "metadata"
RESULTS = ROOT / "bench" / "results"
SANDBOX_PREFIX = "/sandbox/zendesk"
UWF = Path(sys.executable).parent / "uwf"
# Seeded tickets 1-150; every 25th is closed and answers 422 ClosedPreventsUpdate.
TICKETS = tuple(i for i in range(1, 151) if i % 25)
UPDATE_BODY = {"ticket": {"priority": "high"}}  # what value_map P2 -> high makes UWF send
WARMUP = 20  # unmeasured calls per point: connections, first-call imports, caches
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


# --------------------------------------------------------------------------- child processes


class Child:
    """A server we start as a child process, measure through /proc and stop by its PID."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            # A session of its own: Ctrl-C reaches only this script, which then stops the
            # child itself (and waits for it) instead of racing it.
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        """utime + stime of the whole process (every thread), from /proc/<pid>/stat."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
        utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
        return (utime + stime) / CLK_TCK

    def wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {url} in {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL if it does not exit in time."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
        except KeyboardInterrupt:  # a second Ctrl-C: no more patience, but no orphan either
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
            raise

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _die_with_parent() -> None:
    # Runs in the child before exec. If this script is SIGKILLed (no `finally` runs), Linux
    # sends the child SIGTERM (PR_SET_PDEATHSIG), so not even that leaves a server behind.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


@contextlib.contextmanager
def running(child: Child, ready_url: str) -> Iterator[Child]:
    try:
        child.start()
        child.wait_ready(ready_url)
        yield child
    except Exception:
        print(f"{child.name} log (last lines):\n{child.log_tail()}", file=sys.stderr)
        raise
    finally:
        child.stop()


def unthrottled_metadata(directory: Path) -> Path:
    """acme's metadata with a budget the benchmark cannot reach.

    UWF keeps to Zendesk's published 700 requests a minute by default; the sandbox's own limits
    are off too, so both sides measure bookkeeping, not rate limiting.
    """
    shutil.copytree(EXAMPLES / "acme", directory)
    connection = directory / "acme-zendesk.yaml"
    connection.write_text(
        connection.read_text().replace(
            "timeout_seconds: 20\n", "timeout_seconds: 20\nlimits:\n  requests: 100000000\n"
        )
    )
    return directory


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(**uwf: str) -> dict[str, str]:
    # The caller's own UWF_* settings (a database URL, say) must not leak into the run.
    env = {k: v for k, v in os.environ.items() if not k.startswith("UWF_")}
    return {**env, **{f"UWF_{k.upper()}": v for k, v in uwf.items()}}


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


@dataclass
class Point:
    """One measured point: a client (or UWF) at one concurrency."""

    system: str  # "raw" or "uwf"
    client: str  # "httpx", "aiohttp" or "uwf"
    concurrency: int
    actions: int
    ok: int
    errors: dict[str, int]
    wall_s: float
    throughput: float  # successful actions per second
    p50_ms: float | None  # None when no action succeeded
    p99_ms: float | None
    mean_ms: float | None
    # raw: this process (the client); uwf: this process as load generator (not UWF's cost)
    client_cpu_ms: float
    # raw: the sandbox-only process; uwf: the `uwf serve` process (API+worker+DB+sandbox)
    server_cpu_ms: float
    crm_requests: int  # requests the sandbox counted during the point
    crm_by_status: dict[str, int] = field(default_factory=dict)


def percentile(sorted_ms: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p99 of 300 samples is the 297th smallest)."""
    if not sorted_ms:
        return None
    return round(sorted_ms[max(0, math.ceil(p / 100 * len(sorted_ms)) - 1)], 2)


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
    concurrency: int,
    actions: int,
    one: Callable[[int], Awaitable[str | None]],
    server: Child,
    base: str,
) -> Point:
    await drive(min(WARMUP, actions), concurrency, one)
    before = await sandbox_stats(base)
    server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
    started = time.perf_counter()
    latencies, errors = await drive(actions, concurrency, one)
    wall = time.perf_counter() - started
    client_cpu, server_cpu = time.process_time() - client_cpu, server.cpu_seconds() - server_cpu
    after = await sandbox_stats(base)
    latencies.sort()
    by_status = Counter(after["by_status"])
    by_status.subtract(before["by_status"])
    return Point(
        system=system,
        client=client,
        concurrency=concurrency,
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
    )


def basic_auth(home: Path) -> str:
    from uwf.sandboxes import sandbox_credentials

    creds = sandbox_credentials(home, "zendesk")
    token = base64.b64encode(f"{creds['email']}/token:{creds['api_token']}".encode()).decode()
    return f"Basic {token}"


async def raw_points(
    args: argparse.Namespace, sandbox: Child, base: str, home: Path
) -> list[Point]:
    """Part 1: the bare CRM call, with each client, against the sandbox-only process."""
    await configure_sandbox(base, args.latency_ms)
    # Both clients send what UWF's connector sends: Basic auth, JSON in, JSON out.
    headers = {"Authorization": basic_auth(home), "Accept": "application/json"}
    url = f"{base}{SANDBOX_PREFIX}/api/v2/tickets/{{}}.json"
    points = []
    for concurrency in args.concurrency:
        async with httpx.AsyncClient(headers=headers, timeout=30) as hx:

            async def httpx_put(ticket: int, hx: httpx.AsyncClient = hx) -> str | None:
                response = await hx.put(url.format(ticket), json=UPDATE_BODY)
                response.json()
                return None if response.status_code == 200 else str(response.status_code)

            points.append(
                await measure("raw", "httpx", concurrency, args.actions, httpx_put, sandbox, base)
            )
        # The connector's own session settings (uwf.connectors.runtime).
        connector = aiohttp.TCPConnector(limit=100, ttl_dns_cache=300)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

            async def aiohttp_put(ticket: int, s: aiohttp.ClientSession = session) -> str | None:
                async with s.put(url.format(ticket), json=UPDATE_BODY) as response:
                    await response.json()
                    return None if response.status == 200 else str(response.status)

            points.append(
                await measure(
                    "raw", "aiohttp", concurrency, args.actions, aiohttp_put, sandbox, base
                )
            )
        print_progress(points[-2:])
    return points


async def uwf_points(args: argparse.Namespace, serve: Child, base: str, key: str) -> list[Point]:
    """Part 2: escalate_case through `uwf serve`, waiting for each to succeed."""
    await configure_sandbox(base, args.latency_ms)
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

        for concurrency in args.concurrency:
            points.append(
                await measure("uwf", "uwf", concurrency, args.actions, escalate, serve, base)
            )
            print_progress(points[-1:])
    return points


# --------------------------------------------------------------------------- reporting


def print_progress(points: list[Point]) -> None:
    for p in points:
        errors = f", errors {p.errors}" if p.errors else ""
        print(
            f"  {p.client:8} c={p.concurrency:<3} {p.throughput:8.1f}/s  p50 {_f(p.p50_ms)} ms"
            f"  p99 {_f(p.p99_ms)} ms{errors}",
            file=sys.stderr,
            flush=True,
        )


def _f(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def _div(a: float | None, b: float | None, digits: int) -> float | None:
    return None if a is None or not b else round(a / b, digits)


def ratios(points: list[Point]) -> list[dict[str, Any]]:
    """UWF against the fastest raw client (highest throughput) at the same concurrency."""
    rows = []
    for uwf in (p for p in points if p.system == "uwf"):
        raw = [p for p in points if p.system == "raw" and p.concurrency == uwf.concurrency]
        if not raw:
            continue
        fastest = max(raw, key=lambda p: p.throughput)
        # The sandbox's CPU per request, measured alone under aiohttp's load (UWF's outbound
        # client is aiohttp), stands in for the share of `uwf serve` its mounted sandbox used.
        sandbox_share = next((p for p in raw if p.client == "aiohttp"), raw[0]).server_cpu_ms
        own = round(uwf.server_cpu_ms - sandbox_share, 3)
        rows.append({
            "concurrency": uwf.concurrency,
            "fastest_raw": fastest.client,
            "throughput_ratio": _div(uwf.throughput, fastest.throughput, 3),
            "p50_ratio": _div(uwf.p50_ms, fastest.p50_ms, 2),
            "p99_ratio": _div(uwf.p99_ms, fastest.p99_ms, 2),
            "uwf_server_cpu_ms": uwf.server_cpu_ms,
            "sandbox_share_cpu_ms": sandbox_share,
            "uwf_own_cpu_ms": own,
            "raw_client_cpu_ms": fastest.client_cpu_ms,
            "raw_sandbox_cpu_ms": fastest.server_cpu_ms,
            "own_cpu_ratio": _div(own, fastest.client_cpu_ms, 1),
            "total_cpu_ratio": _div(
                uwf.server_cpu_ms, fastest.client_cpu_ms + fastest.server_cpu_ms, 2
            ),
        })  # fmt: skip
    return rows


def markdown(meta: dict[str, Any], points: list[Point], rows: list[dict[str, Any]]) -> str:
    out = [
        f"### {meta['utc']} · Pipe DB {meta['database']} · sandbox latency {meta['latency_ms']} ms",
        "",
        f"commit `{meta['commit']}` · {meta['actions']} measured actions per point after "
        f"{meta['warmup']} warm-up · {meta['cpus']} CPUs (load average "
        f"{meta['loadavg_1m_at_start']} at start) · Python {meta['python']} · "
        f"{meta['platform']} · whole run {meta['duration_s']} s",
        "",
        "| what | conc. | ok | actions/s | p50 ms | p99 ms "
        "| client CPU ms/action | server CPU ms/action | CRM requests/action |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        name = f"raw {p.client}" if p.system == "raw" else "UWF end to end"
        out.append(
            f"| {name} | {p.concurrency} | {p.ok}/{p.actions} | {p.throughput:.1f} "
            f"| {_f(p.p50_ms)} | {_f(p.p99_ms)} | {p.client_cpu_ms:.3f} "
            f"| {p.server_cpu_ms:.2f} | {p.crm_requests / p.actions:.2f} |"
        )
    out += [
        "",
        "Client CPU: raw rows, this process running the client loop; UWF rows, the aiohttp load "
        "generator (not UWF's cost). Server CPU: raw rows, the sandbox-only uvicorn process; UWF "
        "rows, the whole `uwf serve` process (API, worker, Pipe DB client *and* its mounted "
        "sandbox). CPU is utime+stime per measured action.",
        "",
        "UWF against the fastest raw client (highest throughput) at the same concurrency:",
        "",
        "| conc. | fastest raw | throughput UWF/raw | p50 UWF/raw | p99 UWF/raw "
        "| `uwf serve` CPU ms | − sandbox share ms | = UWF's own CPU ms | own ÷ raw client CPU "
        "| `uwf serve` ÷ (raw client + sandbox) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['concurrency']} | {r['fastest_raw']} | {_f(r['throughput_ratio'], 3)} "
            f"| {_f(r['p50_ratio'], 1, '×')} | {_f(r['p99_ratio'], 1, '×')} "
            f"| {r['uwf_server_cpu_ms']:.2f} | {r['sandbox_share_cpu_ms']:.2f} "
            f"| {r['uwf_own_cpu_ms']:.2f} | {_f(r['own_cpu_ratio'], 1, '×')} "
            f"| {_f(r['total_cpu_ratio'], 1, '×')} |"
        )
    out += [
        "",
        "Sandbox share: the sandbox-only process's CPU per request under the raw aiohttp loop at "
        "the same concurrency, a rough stand-in for what the mounted sandbox costs inside "
        "`uwf serve` (which cannot be separated in-process).",
    ]
    failed = [p for p in points if p.errors]
    if failed:
        out += [
            "",
            "**Errors:** " + "; ".join(f"{p.client} c={p.concurrency}: {p.errors}" for p in failed),
        ]
    return "\n".join(out) + "\n"


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


# --------------------------------------------------------------------------- PostgreSQL


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on `server_url`'s server; dropped afterwards."""
    import asyncpg

    plain = server_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    name = "uwf_bench_" + secrets.token_hex(6)

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(plain, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield urlunsplit(urlsplit(plain)._replace(path=f"/{name}"))
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --------------------------------------------------------------------------- main


def concurrency_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("concurrency values must be integers >= 1")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--concurrency",
        type=concurrency_list,
        default=[1, 16],
        help="comma-separated concurrency levels (default: 1,16)",
    )
    parser.add_argument(
        "--actions", type=int, default=300, help="measured actions per point (default: 300)"
    )
    parser.add_argument(
        "--latency-ms",
        type=int,
        default=0,
        help="sandbox response latency, set through _control (default: 0)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="UWF_DATABASE_URL for `uwf serve` (default: SQLite in a temp dir)",
    )
    parser.add_argument(
        "--fresh-database",
        action="store_true",
        help="with a PostgreSQL --database-url: create a new database on that "
        "server for this run and drop it afterwards",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=RESULTS,
        help="where <UTC timestamp>.md and .json go (default: bench/results)",
    )
    parser.add_argument("--serve-sandbox", type=Path, metavar="HOME", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.actions < 1 or args.latency_ms < 0:
        parser.error("--actions must be >= 1 and --latency-ms >= 0")
    if args.fresh_database and not (args.database_url or "").startswith("postgres"):
        parser.error("--fresh-database needs a PostgreSQL --database-url")
    return args


def run(args: argparse.Namespace, database_url: str | None, tmp: Path) -> None:
    started = time.monotonic()
    stamp = datetime.now(UTC)
    meta = {
        "utc": stamp.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "commit": git_commit(),
        "database": "PostgreSQL" if database_url else "SQLite",
        "latency_ms": args.latency_ms,
        "actions": args.actions,
        "warmup": WARMUP,
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        # Other work on the machine skews every number; a high value says "run it again".
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
    }
    points: list[Point] = []

    print("raw clients against the sandbox alone:", file=sys.stderr, flush=True)
    home = tmp / "sandbox-home"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sandbox = Child(
        "sandbox",
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve-sandbox",
            str(home),
            "--port",
            str(port),
        ],
        child_env(),
        tmp / "sandbox.log",
    )
    with running(sandbox, f"{base}{SANDBOX_PREFIX}/_control"):
        points += asyncio.run(raw_points(args, sandbox, base, home))

    print("UWF end to end (uwf serve):", file=sys.stderr, flush=True)
    home = tmp / "uwf-home"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key = "bench-" + secrets.token_urlsafe(16)
    settings = {
        "home": str(home),
        "port": str(port),
        "admin_key": key,
        "metadata_dir": str(unthrottled_metadata(tmp / "metadata")),
    }
    if database_url:
        settings["database_url"] = database_url
    serve = Child("uwf serve", [str(UWF), "serve"], child_env(**settings), tmp / "serve.log")
    with running(serve, f"{base}/healthz"):
        points += asyncio.run(uwf_points(args, serve, base, key))

    meta["duration_s"] = round(time.monotonic() - started, 1)
    rows = ratios(points)
    report = markdown(meta, points, rows)
    sys.stdout.write(report)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    name = stamp.strftime("%Y%m%dT%H%M%SZ")
    (args.output_dir / f"{name}.md").write_text(report)
    data = {"meta": meta, "points": [asdict(p) for p in points], "ratios": rows}
    (args.output_dir / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {args.output_dir / name}.md and .json in {meta['duration_s']} s", file=sys.stderr)


def _terminate(signum: int, _frame: object) -> None:
    # SIGTERM unwinds exactly as Ctrl-C does: inside `asyncio.run` its SIGINT handler cancels
    # the running task cleanly, and then every `finally` stops its child.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        raise KeyboardInterrupt
    signal.raise_signal(signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_sandbox is not None:
        serve_sandbox(args.serve_sandbox, args.port)
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="uwf-bench-")))
            database_url = args.database_url
            if args.fresh_database:
                database_url = stack.enter_context(fresh_database(database_url))
            run(args, database_url, tmp)
    except KeyboardInterrupt:
        print("interrupted; every child process was stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
