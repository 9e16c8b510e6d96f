"""UWF: metadata-driven orchestration of business actions in CRMs."""

__version__ = "0.1.0"
