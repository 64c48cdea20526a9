"""The ``ml`` command."""

from __future__ import annotations
