from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest


@pytest.fixture
def run_async() -> Callable[[Coroutine[Any, Any, Any]], Any]:
    return asyncio.run
