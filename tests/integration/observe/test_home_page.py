"""The home page's edges over plain HTTP against a real agent: the login (the same as JupyterLab's:
API key, the second factor where required, every outcome audited with ``via=home``), the session
cookie, the form token and a foreign Origin, the page's Content-Security-Policy, actions refused by
the operations' own role checks, logout. The browser test (test_browser_pages.py) drives the page
as a person would; this one tries what a person would not."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from tests.conftest import KEYS, AgentProcess
from tests.integration.access.conftest import agent_with

pytestmark = pytest.mark.slow

FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    a = agent_with(tmp_path_factory.mktemp("home"), {"mfa": {"admin": "required"}})
    with a.running():
        yield a


def _client(agent: AgentProcess) -> httpx.Client:
    return httpx.Client(base_url=agent.http_url, follow_redirects=False, timeout=30)


def _login(c: httpx.Client, user: str, key: str, otp: str = "") -> httpx.Response:
    return c.post("/login", content=urllib.parse.urlencode({"user": user, "key": key, "otp": otp, "next": "/"}),
                  headers=FORM)


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, page[:2000]
    return found.group(1)


def _logins(agent: AgentProcess, recovery_code: str) -> list[dict[str, Any]]:
    # The login used the newest time step there is: ml elevates with a recovery code.
    cp = agent.ml("jupyter", "audit", "--action", "access.login", "--json", user="admin",
                  env={"FETCHML_OTP": recovery_code})
    return [e for e in json.loads(cp.stdout)["events"] if (e.get("details") or {}).get("via") == "home"]


def test_login_session_forms_and_roles(agent: AgentProcess) -> None:
    with _client(agent) as c:
        r = c.get("/")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=%2F"
        r = c.get("/login")
        assert r.status_code == 200 and "default-src 'none'" in r.headers["content-security-policy"]
        assert "<script" not in r.text

        r = _login(c, "bob", "not-bob-s-key")
        assert r.status_code == 401 and "login failed" in r.text and "set-cookie" not in r.headers

        for elsewhere in ("//evil.example/", "/\\evil.example/", "https://evil.example/"):  # no open redirect
            r = c.post("/login", headers=FORM, content=urllib.parse.urlencode(
                {"user": "bob", "key": KEYS["bob"], "next": elsewhere}))
            assert r.status_code == 303 and r.headers["location"] == "/", (elsewhere, r.headers["location"])
        r = _login(c, "bob", KEYS["bob"])
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        page = c.get("/")
        assert page.status_code == 200 and "No workspaces yet" in page.text and "Package requests" not in page.text
        token = _csrf(page.text)

        # A form without its token, or with it from another site, does nothing.
        r = c.post("/ui/audit/verify", content="csrf=", headers=FORM)
        assert r.status_code == 403 and "stale" in r.text
        r = c.post("/ui/audit/verify", content=f"csrf={token}", headers={**FORM, "origin": "http://evil.example"})
        assert r.status_code == 403
        # With it, the operation's own role check answers: bob is no admin.
        r = c.post("/ui/audit/verify", content=f"csrf={token}", headers=FORM)
        assert r.status_code == 303
        notice = urllib.parse.parse_qs(urllib.parse.urlsplit(r.headers["location"]).query)["notice"][0]
        assert notice.startswith("error:") and "admin" in notice
        r = c.post("/ui/requests/1/approve", content=f"csrf={token}&reason=x", headers=FORM)
        assert "error:" in urllib.parse.unquote_plus(r.headers["location"])
        r = c.post("/ui/workspaces/nothing-here/explode", content=f"csrf={token}", headers=FORM)
        assert r.status_code == 404
        r = c.get("/ui/workspaces/nothing-here/report")
        assert r.status_code == 404 and "no workspace" in r.text

        # ml auth sessions lists it (a session of no workspace), like JupyterLab's
        sessions = agent.ml_json("auth", "sessions", user="bob")["sessions"]
        assert any(not s["workspace"] and s["method"] == "api_key" and not s.get("ended_at") for s in sessions), sessions

        r = c.post("/logout", content=f"csrf={token}", headers=FORM)
        assert r.status_code == 303 and r.headers["location"] == "/login"
        old = r.request.headers["cookie"]
    with _client(agent) as c:  # the old cookie no longer opens the page
        r = c.get("/", headers={"cookie": old})
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_an_admin_needs_the_second_factor(agent: AgentProcess, tmp_path: Path) -> None:
    with _client(agent) as c:
        r = _login(c, "admin", KEYS["admin"])
        assert r.status_code == 403 and "has not enrolled" in r.text

        doc = agent.ml_json("auth", "mfa", "enroll", user="admin")
        totp = pyotp.TOTP(doc["secret"])
        recovery = agent.ml_json("auth", "mfa", "confirm", totp.now(), user="admin")["recovery_codes"]
        r = _login(c, "admin", KEYS["admin"])
        assert r.status_code == 401 and 'id="otp"' in r.text and "required" in r.text.split('id="otp"')[1][:200]
        r = _login(c, "admin", KEYS["admin"], "000000" if totp.now() != "000000" else "111111")
        assert r.status_code == 401 and "not valid" in r.text
        r = _login(c, "admin", KEYS["admin"], totp.at(time.time() + 30))
        assert r.status_code == 303
        page = c.get("/")
        # The admin's sections came from operations that need the step-up: the login's code counts.
        assert page.status_code == 200 and 'id="requests-none"' in page.text and 'id="chain"' in page.text
        r = c.post("/ui/audit/verify", content=f"csrf={_csrf(page.text)}", headers=FORM)
        notice = urllib.parse.unquote_plus(r.headers["location"])
        assert "error" not in notice, notice
        assert 'class="ok"' in c.get("/").text

    logins = _logins(agent, recovery[0])
    outcomes = {(e["user"], e["outcome"], (e.get("details") or {}).get("reason")) for e in logins}
    assert {("bob", "denied", "bad_credentials"), ("bob", "ok", None), ("admin", "denied", "mfa_not_enrolled"),
            ("admin", "denied", "mfa_failed"), ("admin", "ok", None)} <= outcomes, outcomes
    assert any(e["user"] == "admin" and e["outcome"] == "ok" and e["details"]["mfa"] for e in logins)
