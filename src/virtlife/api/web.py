"""The web UI: pages, static files and the console WebSockets (being written)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI


def install(app: FastAPI, static_root: Path | None = None) -> None:
    """Add the web UI's routes to ``app``."""
