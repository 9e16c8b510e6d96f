"""API Data Access: the HTTP API (FastAPI), with RFC 9457 problem details for every error."""

from uwf.api.app import create_app

__all__ = ["create_app"]
