"""The chaos harness's summary (bench/chaos.py audits, this module reports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Report:
    run_id: str
    seed: int
    database: str
    actions: int
    workers: int
    kill_every_s: float
    faults: dict[str, Any]
    crm_limits: str  # "enforced" or "disabled"
    accepted: int = 0
    not_accepted: int = 0
    idempotent_replays: int = 0  # submissions retried after an error, answered from the key
    api_throttled: int = 0  # submissions the API answered 429 (its per-caller limit), then resent
    succeeded: int = 0
    failed: int = 0
    dead: int = 0
    cancelled: int = 0
    lost: int = 0  # accepted and not final at the end, or missing from the Pipe DB
    duplicates: int = 0  # reason texts with more than one comment in the CRM
    extra_comments: int = 0  # comments beyond the first, summed over duplicated reasons
    succeeded_without_effect: int = 0
    orphan_comments: int = 0  # comments of this run matching no accepted action
    foreign_step_keys: int = 0  # comments carrying another execution's step key
    kills: int = 0
    worker_starts: int = 0
    unexpected_exits: int = 0  # workers that died without being killed by us
    timed_out: bool = False
    wall_s: float = 0.0
    time_to_final_s: float | None = None
    crm_stats: dict[str, Any] = field(default_factory=dict)
    zendesk_limit_per_minute: int = 0
    # UWF's governor keeps each connection to at most `budget_requests` in ANY interval of
    # `budget_window_s`; the sandbox counts what arrived in its busiest sliding 60 s.
    connection: str = "acme-zendesk"
    budget_requests: int | None = None
    budget_window_s: float = 60.0
    errors: dict[str, int] = field(default_factory=dict)  # failed/dead by error code
    lost_ids: list[str] = field(default_factory=list)
    duplicate_reasons: list[str] = field(default_factory=list)

    @property
    def within_budget(self) -> bool | None:
        """No sliding 60 s saw more than the budget (None: the budget is not per 60 s)."""
        if self.budget_requests is None or self.budget_window_s != 60:
            return None
        return int(self.crm_stats.get("max_requests_60s", 0)) <= self.budget_requests

    @property
    def ok(self) -> bool:
        return self.within_budget is not False and not (
            self.lost
            or self.duplicates
            or self.succeeded_without_effect
            or self.orphan_comments
            or self.foreign_step_keys
            or self.not_accepted
        )


def markdown(r: Report) -> str:
    s = r.crm_stats
    injected, by_status = s.get("injected", {}), s.get("by_status", {})
    limit = r.zendesk_limit_per_minute
    enforced = "enforced" if r.crm_limits == "enforced" else "not enforced in this run"
    rows = [
        ("accepted", f"{r.accepted} / {r.actions}"),
        ("submissions the API answered 429 (per-caller limit), sent again", r.api_throttled),
        ("succeeded", r.succeeded),
        ("failed", r.failed),
        ("dead", r.dead),
        ("cancelled", r.cancelled),
        ("**lost** (accepted, not final or missing)", f"**{r.lost}**"),
        ("**duplicate CRM effects** (reason texts with > 1 comment)", f"**{r.duplicates}**"),
        ("succeeded without its comment", r.succeeded_without_effect),
        ("comments of this run matching no action / with another execution's key",
         f"{r.orphan_comments} / {r.foreign_step_keys}"),
        ("workers killed (SIGKILL) / started / exited by themselves",
         f"{r.kills} / {r.worker_starts} / {r.unexpected_exits}"),
        ("CRM requests (sandbox count)", s.get("requests_total", 0)),
        ("429s injected / received by UWF",
         f"{injected.get('429', 0)} / {by_status.get('429', 0)}"),
        ("503s injected", injected.get("503", 0)),
        ("responses dropped after the write", s.get("dropped_after_write", 0)),
        ("max CRM requests in any 1 s", s.get("max_requests_1s", 0)),
        (f"max CRM requests in any sliding 60 s (connection {r.connection}) vs UWF's budget",
         f"{s.get('max_requests_60s', 0)} vs {r.budget_requests} per {r.budget_window_s:g} s"
         + {True: " (within)", False: " (**over**)", None: ""}[r.within_budget]),
        ("Zendesk's own limit", f"{limit}/min ({enforced})"),
        ("time until every action was final", "timed out" if r.timed_out else
         f"{r.time_to_final_s} s"),
        ("whole run", f"{r.wall_s} s"),
    ]  # fmt: skip
    out = [
        f"### chaos run {r.run_id} · {r.actions} actions · {r.workers} workers · SIGKILL every "
        f"{r.kill_every_s} s · seed {r.seed}",
        "",
        f"Faults: {r.faults['error_rates']['429']:.0%} 429, {r.faults['error_rates']['503']:.0%} "
        f"503, {r.faults['drop_after_write_rate']:.0%} responses dropped after the write, "
        f"latency {r.faults['latency_ms']} ms; Zendesk's own rate limits {r.crm_limits}. "
        f"Pipe DB {r.database}.",
        "",
        "| | |",
        "|---|---:|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
    ]
    if r.errors:
        out.append(
            "Failed and dead by error: " + ", ".join(f"{k} × {v}" for k, v in r.errors.items())
        )
    if r.lost_ids:
        out.append("Lost: " + ", ".join(r.lost_ids))
    if r.duplicate_reasons:
        out.append("Duplicated: " + ", ".join(r.duplicate_reasons[:50]))
    out.append("**PASS**" if r.ok else "**FAIL**")
    return "\n".join(out) + "\n"
