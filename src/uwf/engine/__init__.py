"""The durable executor and step interpreter (DESIGN decision 1)."""

from uwf.engine._check import Finding, check_against_crm, document_lines
from uwf.engine._dryrun import DryRunRuntime, dry_run
from uwf.engine._executor import Executor
from uwf.engine._targets import TargetResolver

__all__ = [
    "DryRunRuntime",
    "Executor",
    "Finding",
    "TargetResolver",
    "check_against_crm",
    "document_lines",
    "dry_run",
]
