"""Running blocking calls off the event loop.

Blocking SDKs (python-nomad over ``requests``, the docker SDK, ``sqlite3``) must never run on the
agent's event loop. :func:`run_blocking` is the one way to call them from a coroutine.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["run_blocking"]

T = TypeVar("T")


async def run_blocking(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` in the default thread pool and return its result.

    Exceptions raised by ``fn`` propagate unchanged. Cancelling the awaiting task does not stop
    the thread; the call finishes in the background and its result is dropped.
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))
