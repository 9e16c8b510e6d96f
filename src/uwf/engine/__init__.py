"""The durable executor and step interpreter (DESIGN decision 1)."""

from uwf.engine._executor import Executor
from uwf.engine._targets import TargetResolver

__all__ = ["Executor", "TargetResolver"]
