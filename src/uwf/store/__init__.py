"""The Pipe DB: metadata versions, executions (which are the queue), the step ledger."""

from uwf.store._db import create_engine, new_id, upgrade, utcnow
from uwf.store._repo import Execution, LeaseLostError, StepRun, Store
from uwf.store._tables import (
    EXECUTION_STATUSES,
    FINAL_STATUSES,
    STEP_STATUSES,
    governor_counters,
    governor_pauses,
)
from uwf.store._tokens import LockedToken, TokenRepo, TokenRow

__all__ = [
    "EXECUTION_STATUSES",
    "FINAL_STATUSES",
    "STEP_STATUSES",
    "Execution",
    "LeaseLostError",
    "LockedToken",
    "StepRun",
    "Store",
    "TokenRepo",
    "TokenRow",
    "create_engine",
    "governor_counters",
    "governor_pauses",
    "new_id",
    "upgrade",
    "utcnow",
]
