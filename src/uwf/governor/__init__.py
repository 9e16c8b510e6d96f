"""The governor: per-connection budgets, pauses after 429s, and circuit breakers.

DESIGN: budgets hold across every worker process. Request counters and pauses live in the Pipe
DB when it is PostgreSQL (every worker sees them); the embedded default (SQLite, one process)
keeps them in memory. Concurrency limits and circuit breakers are per process.
"""

from uwf.governor._governor import Admission, Governor
from uwf.governor._state import LocalState, SqlState, State

__all__ = ["Admission", "Governor", "LocalState", "SqlState", "State"]
