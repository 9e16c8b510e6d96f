"""The benchmark's records and its Markdown report (run.py measures, this module writes)."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

ACCEPT_TARGET_P99_MS = 25.0  # issue 4: API accept (202) p99 <= 25 ms at 300 actions/s


@dataclass
class Point:
    """One measured point: a client (or UWF) at one concurrency, latency and database."""

    system: str  # "raw" or "uwf"
    client: str  # "httpx", "aiohttp" or "uwf"
    concurrency: int
    latency_ms: int  # the sandbox's added response latency
    database: str | None  # UWF's Pipe DB ("SQLite", "PostgreSQL"); None for raw clients
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
    # raw: the sandbox-only process; uwf: the `uwf serve` process (API, worker, Pipe DB client)
    server_cpu_ms: float
    crm_requests: int  # requests the sandbox counted during the point
    crm_by_status: dict[str, int] = field(default_factory=dict)
    # uwf: the sandbox-only process UWF's connection calls (its own process, as for raw rows)
    crm_cpu_ms: float | None = None


@dataclass
class Accept:
    """The open-loop accept-rate measurement against `uwf serve` (embedded default)."""

    rate: float  # scheduled actions per second
    seconds: float
    scheduled: int
    accepted: int  # answered 202 with an execution id
    errors: dict[str, int]  # anything else, by status or exception name
    send_lag_max_ms: float  # how late the generator itself sent its latest request
    achieved_rate: float  # accepted ÷ (last 202 received − first scheduled send)
    p50_ms: float | None  # 202 latency from each request's SCHEDULED send time
    p99_ms: float | None
    max_ms: float | None
    drain_s: float | None  # after the last 202, until no execution was queued or running
    drain_limit_s: float
    final: dict[str, int]  # accepted executions by final status
    lost: int  # accepted but not final (or not found) when the drain ended
    serve_cpu_ms: float  # `uwf serve` CPU per action, accepting and draining

    @property
    def ok(self) -> bool:
        return self.lost == 0 and set(self.final) <= {"succeeded"} and not self.errors


def percentile(sorted_ms: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p99 of 300 samples is the 297th smallest)."""
    if not sorted_ms:
        return None
    return round(sorted_ms[max(0, math.ceil(p / 100 * len(sorted_ms)) - 1)], 2)


def print_progress(points: list[Point]) -> None:
    for p in points:
        errors = f", errors {p.errors}" if p.errors else ""
        where = f" {p.database}" if p.database else ""
        print(
            f"  {p.client:8}{where} latency {p.latency_ms} ms c={p.concurrency:<3} "
            f"{p.throughput:8.1f}/s  p50 {_f(p.p50_ms)} ms  p99 {_f(p.p99_ms)} ms{errors}",
            file=sys.stderr,
            flush=True,
        )


def _f(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def _div(a: float | None, b: float | None, digits: int) -> float | None:
    return None if a is None or not b else round(a / b, digits)


def ratios(points: list[Point]) -> list[dict[str, Any]]:
    """Each UWF point against the fastest raw client (highest throughput) at the same
    concurrency and sandbox latency."""
    rows = []
    for uwf in (p for p in points if p.system == "uwf"):
        raw = [
            p
            for p in points
            if p.system == "raw"
            and p.concurrency == uwf.concurrency
            and p.latency_ms == uwf.latency_ms
        ]
        if not raw:
            continue
        fastest = max(raw, key=lambda p: p.throughput)
        # The CRM sandbox runs in a process of its own for UWF's points too, so `uwf serve`'s
        # CPU is UWF's own, exactly: no share to estimate and subtract.
        own = uwf.server_cpu_ms
        crm = uwf.crm_cpu_ms or 0.0
        rows.append({
            "database": uwf.database,
            "latency_ms": uwf.latency_ms,
            "concurrency": uwf.concurrency,
            "fastest_raw": fastest.client,
            "throughput_ratio": _div(uwf.throughput, fastest.throughput, 3),
            "p50_ratio": _div(uwf.p50_ms, fastest.p50_ms, 2),
            "p99_ratio": _div(uwf.p99_ms, fastest.p99_ms, 2),
            "uwf_server_cpu_ms": uwf.server_cpu_ms,
            "uwf_crm_cpu_ms": uwf.crm_cpu_ms,
            "uwf_own_cpu_ms": own,
            "raw_client_cpu_ms": fastest.client_cpu_ms,
            "raw_sandbox_cpu_ms": fastest.server_cpu_ms,
            "own_cpu_ratio": _div(own, fastest.client_cpu_ms, 1),
            "total_cpu_ratio": _div(
                own + crm, fastest.client_cpu_ms + fastest.server_cpu_ms, 2
            ),
        })  # fmt: skip
    return rows


def _order(p: Point) -> tuple[int, int, int, int]:
    # Raw clients first, then each database; within each, by latency, then concurrency.
    group = 0 if p.system == "raw" else 1 + (p.database != "SQLite")
    return group, p.latency_ms, p.concurrency, p.client != "httpx"


def markdown(
    meta: dict[str, Any],
    points: list[Point],
    rows: list[dict[str, Any]],
    accept: Accept | None,
) -> str:
    out = [
        f"### {meta['utc']} · benchmark matrix · Pipe DB {', '.join(meta['databases_run'])}",
        "",
        f"commit `{meta['commit']}` · {meta['actions']} measured actions per point "
        f"({meta['actions_serial']} at concurrency 1) after {meta['warmup']} warm-up · "
        f"concurrency {', '.join(map(str, meta['concurrency']))} · sandbox latency "
        f"{', '.join(f'{v} ms' for v in meta['latency_ms'])} · {meta['cpus']} CPUs (load "
        f"average {meta['loadavg_1m_at_start']} at start) · Python {meta['python']} · "
        f"{meta['platform']} · whole run {meta['duration_s']} s",
        "",
    ]
    for database, reason in meta["skipped"].items():
        out += [f"**{database} skipped:** {reason}", ""]
    out += [
        "| what | Pipe DB | latency ms | conc. | ok | actions/s | p50 ms | p99 ms "
        "| client CPU ms/action | server CPU ms/action | CRM requests/action |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in sorted(points, key=_order):
        name = f"raw {p.client}" if p.system == "raw" else "UWF end to end"
        out.append(
            f"| {name} | {p.database or '–'} | {p.latency_ms} | {p.concurrency} "
            f"| {p.ok}/{p.actions} | {p.throughput:.1f} | {_f(p.p50_ms)} | {_f(p.p99_ms)} "
            f"| {p.client_cpu_ms:.3f} | {p.server_cpu_ms:.2f} "
            f"| {p.crm_requests / p.actions:.2f} |"
        )
    out += [
        "",
        "Client CPU: raw rows, this process running the client loop; UWF rows, the aiohttp load "
        "generator (not UWF's cost). Server CPU: raw rows, the sandbox-only uvicorn process; UWF "
        "rows, the whole `uwf serve` process (API, worker, Pipe DB client; the CRM sandbox it "
        "calls is a sandbox-only process of its own, and PostgreSQL's processes are not "
        "counted). CPU is utime+stime per measured action.",
        "",
        "UWF against the fastest raw client (highest throughput) at the same concurrency and "
        "sandbox latency:",
        "",
        "| Pipe DB | latency ms | conc. | fastest raw | throughput UWF/raw | p50 UWF/raw "
        "| p99 UWF/raw | UWF's own CPU ms (`uwf serve`) | its CRM sandbox CPU ms "
        "| own ÷ raw client CPU | (`uwf serve` + sandbox) ÷ (raw client + sandbox) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['database']} | {r['latency_ms']} | {r['concurrency']} | {r['fastest_raw']} "
            f"| {_f(r['throughput_ratio'], 3)} | {_f(r['p50_ratio'], 1, '×')} "
            f"| {_f(r['p99_ratio'], 1, '×')} | {r['uwf_own_cpu_ms']:.2f} "
            f"| {_f(r['uwf_crm_cpu_ms'], 2)} "
            f"| {_f(r['own_cpu_ratio'], 1, '×')} | {_f(r['total_cpu_ratio'], 1, '×')} |"
        )
    out += [
        "",
        "UWF's own CPU is the `uwf serve` process's, exactly: the Zendesk sandbox its connection "
        "calls runs in a sandbox-only process, as for the raw clients.",
    ]
    failed = [p for p in points if p.errors]
    if failed:
        out += [
            "",
            "**Errors:** "
            + "; ".join(
                f"{p.client} {p.database or ''} latency {p.latency_ms} c={p.concurrency}: "
                f"{p.errors}"
                for p in failed
            ),
        ]
    if accept is not None:
        out += ["", *accept_markdown(accept)]
    return "\n".join(out) + "\n"


def accept_markdown(a: Accept) -> list[str]:
    met = a.p99_ms is not None and a.p99_ms <= ACCEPT_TARGET_P99_MS
    verdict = "met" if met else "**not met**"
    final = ", ".join(f"{k} {v}" for k, v in sorted(a.final.items())) or "none"
    errors = ", ".join(f"{k} {v}" for k, v in sorted(a.errors.items())) or "none"
    drain = "–" if a.drain_s is None else f"{a.drain_s:.1f} s"
    return [
        f"#### API accept rate: open loop, {a.rate:g} actions/s for {a.seconds:g} s, "
        "`uwf serve` on the embedded default (SQLite, in-process worker, latency 0)",
        "",
        "| | |",
        "|---|---:|",
        f"| scheduled · accepted (202) · other answers | {a.scheduled} · {a.accepted} · {errors} |",
        f"| achieved accept rate | {a.achieved_rate:.1f} /s |",
        f"| 202 latency from the scheduled send time: p50 · p99 · max | {_f(a.p50_ms)} · "
        f"{_f(a.p99_ms)} · {_f(a.max_ms)} ms |",
        f"| target: p99 ≤ {ACCEPT_TARGET_P99_MS:g} ms at 300 actions/s | {verdict} |",
        f"| generator's worst send lag (its own queueing) | {a.send_lag_max_ms:.1f} ms |",
        f"| drain: after the last 202, until none queued or running (bound "
        f"{a.drain_limit_s:g} s) | {drain} |",
        f"| accepted actions by final status | {final} |",
        f"| **lost** (accepted, not final by the bound) | **{a.lost}** |",
        f"| `uwf serve` CPU per action (accepting and draining) | {a.serve_cpu_ms:.2f} ms |",
    ]
