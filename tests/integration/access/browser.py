"""Headless Chromium driven over its DevTools protocol (CDP), for the browser tests of access.

Why CDP over a WebSocket and not Playwright: the project already depends on ``websockets``, the
few commands a test needs (open a tab, navigate, evaluate, screenshot, collect console errors)
are a page of code, and it drives the distribution's ``/usr/bin/chromium`` whatever its version.
Playwright's Python package brings a Node.js driver of its own and is made for the browser builds
it downloads; pointed at another Chromium it works, but a version it was not made for can break
it, and nothing here could download its builds anyway.

Chromium runs as this machine needs it (root, no network): ``--headless --no-sandbox
--disable-gpu --disable-quic --no-first-run --disable-background-networking
--disable-component-update --disable-sync``, a fresh ``--user-data-dir``, DevTools on a port it
picks itself (``--remote-debugging-port=0``, read back from ``DevToolsActivePort``).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["Browser", "Page", "chromium_path", "launch"]

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-proxy-server", "--window-size=1280,900", "--remote-debugging-port=0")


def chromium_path() -> str | None:
    """The Chromium binary (Debian's ``chromium`` package), or ``None`` when not installed."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """One CDP connection to the browser; pages are attached to it in flat mode (session ids)."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict[str, Any]:
        """Send one command and return its result; events read meanwhile are kept in ``events``."""
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to {method} in {timeout:.0f} s")
            reply = json.loads(self._ws.recv(timeout=left))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result") or {})
            if "method" in reply:
                self.events.append(reply)

    def pump(self, seconds: float) -> None:
        """Read events for ``seconds``."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                reply = json.loads(self._ws.recv(timeout=left))
            except TimeoutError:
                return
            if "method" in reply:
                self.events.append(reply)

    def new_page(self) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Log"):
            page.send(f"{domain}.enable")
        return page


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser, self.session = browser, session
        self.failure_shot: Path | None = None  # where a failed wait_for leaves a screenshot

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60.0) -> dict[str, Any]:
        return self.browser.send(method, params, self.session, timeout)

    def goto(self, url: str) -> None:
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise RuntimeError(f"navigating to {url}: {result['errorText']}")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited when it is a promise)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} raised: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 90.0, what: str = "") -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError):  # a page mid-navigation has no context yet
                value = self.evaluate(expression)
                if value:
                    return value
            self.browser.pump(0.25)
        if self.failure_shot is not None:
            with contextlib.suppress(RuntimeError, TimeoutError):
                self.screenshot(self.failure_shot)
        errors = "; ".join(self.errors())[:1000]
        raise AssertionError(f"the page never showed {what or expression} (at {self.url()}; "
                             f"screenshot {self.failure_shot}; page errors: {errors or 'none'})")

    def click(self, selector: str) -> None:
        """A mouse click in the middle of the first element ``selector`` matches."""
        box = self.evaluate(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            if (!e) return null; const r = e.getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
        if not box:
            raise AssertionError(f"nothing on the page matches {selector}")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 1})

    def press(self, key: str, code: int, shift: bool = False) -> None:
        """A key press (``key`` as DOM names it, ``code`` its virtual key code), with Shift if asked."""
        for kind in ("rawKeyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", {"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code,
                                                 "modifiers": 8 if shift else 0})

    def url(self) -> str:
        with contextlib.suppress(RuntimeError, TimeoutError):
            return str(self.evaluate("location.href"))
        return "?"

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self, ignore: Callable[[str], bool] = lambda text: False) -> list[str]:
        """What the page reported as errors: console.error calls, uncaught exceptions, and
        browser log entries of level error (failed loads, refused requests)."""
        out = []
        for e in self.browser.events:
            if e.get("sessionId") != self.session:
                continue
            p = e.get("params") or {}
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            elif e["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails") or {}
                text = (d.get("exception") or {}).get("description") or d.get("text", "exception")
            elif e["method"] == "Log.entryAdded" and (p.get("entry") or {}).get("level") == "error":
                entry = p["entry"]
                text = f"{entry.get('text')} {entry.get('url', '')}".strip()
            else:
                continue
            if not ignore(text):
                out.append(text)
        return out


@contextlib.contextmanager
def launch(binary: str, log_dir: Path) -> Iterator[Browser]:
    """Start Chromium with a fresh profile; yield a :class:`Browser`; stop it and remove the profile."""
    from websockets.sync.client import connect

    profile = Path(tempfile.mkdtemp(prefix="fmltest-chromium-"))
    log = open(log_dir / "chromium.log", "wb")
    proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start:\n" + (log_dir / "chromium.log").read_text()[-2000:])
            time.sleep(0.1)
        port, path = port_file.read_text().split()[:2]
        with connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=30) as ws:
            yield Browser(ws)
    finally:
        # Its own process group (start_new_session): the renderers and helpers go with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.rmtree(profile, ignore_errors=True)
