"""The Pipe DB: metadata versions, executions (which are the queue), the step ledger,
callers' API keys and the audit log."""

from uwf.store._audit import AUDIT_ACTIONS, AuditEntry, AuditRecord, AuditRepo
from uwf.store._db import create_engine, new_id, upgrade, utcnow
from uwf.store._gate import api_first
from uwf.store._keys import KEY_PREFIX, SCOPES, ApiKey, KeyRepo, hash_key
from uwf.store._repo import Execution, LeaseLostError, StepRun, Store
from uwf.store._secrets import SecretRepo, StoredSecret
from uwf.store._tables import (
    EXECUTION_STATUSES,
    FINAL_STATUSES,
    STEP_STATUSES,
    governor_counters,
    governor_pauses,
)
from uwf.store._tokens import LockedToken, TokenRepo, TokenRow

__all__ = [
    "AUDIT_ACTIONS",
    "EXECUTION_STATUSES",
    "FINAL_STATUSES",
    "KEY_PREFIX",
    "SCOPES",
    "STEP_STATUSES",
    "ApiKey",
    "AuditEntry",
    "AuditRecord",
    "AuditRepo",
    "Execution",
    "KeyRepo",
    "LeaseLostError",
    "LockedToken",
    "SecretRepo",
    "StepRun",
    "Store",
    "StoredSecret",
    "TokenRepo",
    "TokenRow",
    "api_first",
    "create_engine",
    "governor_counters",
    "governor_pauses",
    "hash_key",
    "new_id",
    "upgrade",
    "utcnow",
]
