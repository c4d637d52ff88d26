"""The REST API's routes for the guest agent, snapshots and migration.

Thin over ``GuestAgent``, ``Snapshots`` and ``Migrations``, like their CLI commands;
the state-changing ones run in the background (202 + operation id).
"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
