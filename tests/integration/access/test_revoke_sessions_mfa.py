"""Revocation and role changes reach open connections; sessions end; MFA; allowlists.

All against one real agent and one real JupyterLab (local runtime) whose agent.yaml sets short
session timeouts, MFA required for admins, an agent-wide allowlist with a trusted proxy, and a
personal allowlist for carol.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import KEYS

from .conftest import World, agent_with
from .lab import Lab, base_and_token, execute

pytestmark = pytest.mark.slow

ACCESS = {
    "session_idle": "4s",
    "session_max": "12s",
    "mfa": {"admin": "required"},
    "allowed_networks": ["127.0.0.0/8", "10.0.0.0/8"],
    "trusted_proxies": ["127.0.0.1"],
}


@pytest.fixture(scope="module")
def pw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    a = agent_with(tmp_path_factory.mktemp("policy"), ACCESS, {"carol": {"allowed_networks": ["10.0.0.0/8"]}})
    with a.running():
        # carol may come only from 10/8: grants for her are made before her own calls matter.
        yield make_world_without_carol(a)


def make_world_without_carol(a: Any) -> World:
    a.ml("jupyter", "create", "pol", user="bob")
    for user, role in (("dave", "collaborator"), ("erin", "editor"), ("carol", "viewer")):
        a.ml("jupyter", "access", "pol", f"--user={user}", f"--role={role}", user="bob")
    urls = {"owner": a.ml_json("jupyter", "info", "pol", user="bob")["url"],
            "collaborator": a.ml_json("jupyter", "info", "pol", user="dave")["url"],
            "editor": a.ml_json("jupyter", "info", "pol", user="erin")["url"]}
    return World(a, "pol", urls)


def _wait(predicate: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not reached")


def _events(w: World, user: str = "bob", **kw: str) -> list[dict[str, Any]]:
    return w.agent.ml_json("jupyter", "audit", w.workspace, user=user)["events"]


# -- revocation and role changes ------------------------------------------------------------------


def test_revoke_closes_an_open_kernel_connection(pw: World) -> None:
    a = pw.agent
    a.ml("jupyter", "access", pw.workspace, "--user=dave", "--role=collaborator", user="bob")
    dave = Lab(*base_and_token(a.ml_json("jupyter", "info", pw.workspace, user="dave")["url"]))
    status, kernel = dave.call("POST", "api/kernels", {"name": "python3"})
    assert status == 201
    with dave.kernel_ws(kernel["id"]) as ws:
        assert execute(ws, "1+1").strip() == "2"
        a.ml("jupyter", "revoke", pw.workspace, "dave", user="bob")
        revoked_at = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            while time.monotonic() - revoked_at < 30:
                _drain(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    # New requests with the old URL are refused, and stay refused after access is granted again.
    assert dave.call("GET", "api/contents")[0] in (401, 403)
    a.ml("jupyter", "access", pw.workspace, "--user=dave", "--role=collaborator", user="bob")
    assert dave.call("GET", "api/contents")[0] == 401
    fresh = a.ml_json("jupyter", "info", pw.workspace, user="dave")["url"]
    assert fresh.split("token=")[1] != dave.token
    _wait(lambda: any(e["action"] == "jupyter.disconnected" and e["user"] == "dave" for e in _events(pw)))


def _drain(ws: Any) -> None:
    try:
        ws.recv(timeout=1)
    except TimeoutError:
        pass


def test_role_change_takes_effect_on_new_requests_and_open_kernels(pw: World) -> None:
    a = pw.agent
    erin = Lab(*base_and_token(pw.urls["editor"]))
    assert erin.call("POST", "api/terminals")[0] == 200
    status, kernel = erin.call("POST", "api/kernels", {"name": "python3"})
    assert status == 201
    with erin.kernel_ws(kernel["id"]) as ws:
        assert execute(ws, "2+2").strip() == "4"
        a.ml("jupyter", "access", pw.workspace, "--user=erin", "--role=viewer", user="bob")
        with pytest.raises(ConnectionClosed):
            for _ in range(30):
                _drain(ws)
    status, doc = erin.call("POST", "api/terminals")
    assert status == 403 and "editor role" in doc["message"]
    assert erin.call("GET", "api/contents")[0] == 200  # a viewer still reads
    a.ml("jupyter", "access", pw.workspace, "--user=erin", "--role=editor", user="bob")
    assert _wait(lambda: erin.call("POST", "api/terminals")[0] == 200, 5)


# -- sessions -------------------------------------------------------------------------------------


def _browser_login(w: World, role: str) -> Lab:
    base, token = base_and_token(w.urls[role])
    browser = Lab(base, browser=True)
    status, _ = browser.open_page("lab?token=" + token)
    assert status == 200
    assert any(c.name.startswith("fetchml-session-") for c in browser.jar)
    return browser


def test_session_idle_timeout_and_ml_auth_sessions(pw: World) -> None:
    browser = _browser_login(pw, "editor")
    assert browser.call("GET", "api/contents")[0] == 200
    listed = pw.agent.ml_json("auth", "sessions", user="erin")["sessions"]
    mine = [s for s in listed if s["workspace"] == pw.workspace and s["method"] == "token"]
    assert mine and mine[0]["user"] == "erin"
    time.sleep(5)  # longer than access.session_idle (4 s) without a request
    status, doc = browser.call("GET", "api/contents")
    assert status == 401 and "session has ended" in doc["message"]
    ended = pw.agent.ml_json("auth", "sessions", "--ended", user="erin")["sessions"]
    assert any(s["id"] == mine[0]["id"] and s["end_reason"] == "session_idle" for s in ended)


def test_session_max_lifetime(pw: World) -> None:
    browser = _browser_login(pw, "editor")
    started = time.monotonic()
    while time.monotonic() - started < 11:  # keep it busy: only the absolute lifetime can end it
        assert browser.call("GET", "api/contents")[0] == 200
        time.sleep(1.5)
    _wait(lambda: browser.call("GET", "api/contents")[0] == 401, 10)


def test_ending_a_session_with_ml(pw: World) -> None:
    browser = _browser_login(pw, "owner")
    sid = next(s["id"] for s in pw.agent.ml_json("auth", "sessions", user="bob")["sessions"])
    assert pw.agent.ml("auth", "sessions", "end", sid, user="dave", check=False).returncode == 3  # not dave's
    pw.agent.ml("auth", "sessions", "end", sid, user="bob")
    _wait(lambda: browser.call("GET", "api/contents")[0] == 401, 5)


# -- MFA ------------------------------------------------------------------------------------------


def _enroll(w: World, user: str) -> tuple[pyotp.TOTP, list[str]]:
    doc = w.agent.ml_json("auth", "mfa", "enroll", user=user)
    assert doc["uri"].startswith("otpauth://totp/") and user in doc["uri"]
    totp = pyotp.TOTP(doc["secret"])
    confirmed = w.agent.ml_json("auth", "mfa", "confirm", totp.now(), user=user)
    assert confirmed["enrolled"] and len(confirmed["recovery_codes"]) == 10
    return totp, confirmed["recovery_codes"]


def test_mfa_enrolment_and_browser_login(pw: World) -> None:
    totp, recovery = _enroll(pw, "dave")
    pw.agent.ml("jupyter", "access", pw.workspace, "--user=dave", "--role=collaborator", user="bob")
    base, _ = base_and_token(pw.urls["owner"])
    browser = Lab(base, browser=True)
    fields = {"username": "dave", "password": KEYS["dave"], "next": "/lab"}
    status, _, page = browser.form("login", fields)
    assert status == 401 and "Authenticator code" in page and "enter the code" in page
    status, _, page = browser.form("login", {**fields, "otp": "000000"})
    assert status == 401 and "not valid" in page
    status, headers, _ = browser.form("login", {**fields, "otp": totp.at(time.time() + 30)})
    assert status == 302 and headers["Location"].endswith("/lab")
    assert browser.call("GET", "api/contents")[0] == 200
    # A recovery code works once.
    again = Lab(base, browser=True)
    assert again.form("login", {**fields, "otp": recovery[0]})[0] == 302
    assert Lab(base, browser=True).form("login", {**fields, "otp": recovery[0]})[0] == 401
    logins = [e for e in _events(pw) if e["action"] == "access.login" and e["user"] == "dave"]
    assert any(e["outcome"] == "ok" and e["details"]["mfa"] for e in logins)
    assert any(e["outcome"] == "denied" and e["details"]["reason"] == "mfa_failed" for e in logins)
    # An enrolled person's personal URL asks for the code too.
    url = pw.agent.ml_json("jupyter", "info", pw.workspace, user="dave")["url"]
    status, headers = Lab(base, browser=True).open_page("lab?token=" + url.split("token=")[1])
    assert status == 302 and "/login" in headers["Location"]


def test_mfa_required_for_admin_operations(pw: World) -> None:
    cp = pw.agent.ml("jupyter", "list", user="admin", check=False)
    assert cp.returncode == 3 and "second factor" in cp.stderr
    totp, _ = _enroll(pw, "admin")  # enrolment itself is allowed without one
    cp = pw.agent.ml("jupyter", "list", user="admin", check=False, env={"FETCHML_OTP": totp.at(time.time() + 30)})
    assert cp.returncode == 0, cp.stderr  # ml asked for the code (FETCHML_OTP), elevated, ran it again
    assert pw.agent.ml("jupyter", "list", user="admin").returncode == 0  # elevated for a while
    assert pw.agent.ml("jupyter", "list", user="bob").returncode == 0  # not an admin: not required
    pw.agent.ml("auth", "mfa", "reset", "dave", user="admin")
    assert pw.agent.ml_json("auth", "mfa", "status", "--user", "dave", user="admin")["enrolled"] is False
    actions = {e["action"] for e in pw.agent.ml_json("jupyter", "audit", user="admin")["events"]}
    assert {"mfa.enroll", "mfa.confirm", "mfa.elevate", "mfa.reset"} <= actions


# -- allowlists -----------------------------------------------------------------------------------


def _http(w: World, user: str, path: str, forwarded: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {KEYS[user]}"}
    if forwarded:
        headers["X-Forwarded-For"] = forwarded
    req = urllib.request.Request(w.agent.http_url + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_allowlists_on_the_api_and_on_jupyterlab(pw: World) -> None:
    a = pw.agent
    # The agent-wide list: 192.168/16 is outside; X-Forwarded-For is believed from 127.0.0.1.
    assert _http(pw, "bob", "/api/v1/jupyter/workspaces", "192.168.7.7") == 403
    assert _http(pw, "bob", "/api/v1/jupyter/workspaces", "10.1.2.3") == 200
    # carol's own list (10/8): her WebSocket calls from 127.0.0.1 are refused, via a proxy allowed.
    cp = a.ml("jupyter", "list", user="carol", check=False)
    assert cp.returncode == 3 and "127.0.0.1" in cp.stderr
    assert _http(pw, "carol", "/api/v1/jupyter/workspaces", "10.9.9.9") == 200
    url = _wait(lambda: _carol_url(pw))
    base, token = base_and_token(url)
    status, doc = Lab(base, token).call("GET", "api/contents")
    assert status == 403 and "127.0.0.1" in doc["message"]
    assert Lab(base, token, headers={"X-Forwarded-For": "10.9.9.9"}).call("GET", "api/contents")[0] == 200
    denied = _wait(lambda: [e for e in _network_denials(pw) if e["details"]["via"] == "jupyterlab"] and _network_denials(pw))
    addresses = {e["details"]["address"] for e in denied}
    assert {"192.168.7.7", "127.0.0.1"} <= addresses
    assert {e["details"]["via"] for e in denied} >= {"http", "api", "jupyterlab"}


def _carol_url(w: World) -> str | None:
    req = urllib.request.Request(w.agent.http_url + f"/api/v1/jupyter/workspaces/{w.workspace}",
                                 headers={"Authorization": f"Bearer {KEYS['carol']}", "X-Forwarded-For": "10.9.9.9"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        import json

        return str(json.loads(resp.read())["url"])


def _network_denials(w: World) -> list[dict[str, Any]]:
    """The agent-wide refusals (they name no workspace). Read from the agent's database: reading
    the whole log with ml needs an admin, and admins here need an elevation first."""
    import json

    db = w.agent.data_dir / "agent.db"
    import sqlite3

    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT user, details FROM audit WHERE action = 'access.network_denied'").fetchall()
    conn.close()
    return [{"user": u, "details": json.loads(d)} for u, d in rows]


def test_workspace_password_is_the_owners(pw: World, tmp_path: Path) -> None:
    a = pw.agent
    cp = a.ml("jupyter", "password", pw.workspace, "--password", "collab-pass-1", user="erin", check=False)
    assert cp.returncode == 3 and "owner" in cp.stderr
    cp = a.ml("jupyter", "start", "--name", pw.workspace, "--password", "collab-pass-2", user="dave", check=False)
    assert cp.returncode in (0, 3)
    a.ml("jupyter", "password", pw.workspace, "--password", "owner-pass-1", user="bob")
    base, _ = base_and_token(pw.urls["owner"])
    browser = Lab(base, browser=True)
    status, _, _ = browser.form("login", {"username": "bob", "password": "owner-pass-1", "next": "/lab"})
    assert status == 302
    status, me = browser.call("GET", "api/me")
    assert status == 200 and me["identity"]["username"] == "bob" and me["identity"]["role"] == "owner"
    denied = [e for e in _events(pw) if e["action"] == "workspace.password" and e["outcome"] == "denied"]
    assert {e["user"] for e in denied} >= {"erin"}
    assert re.search(r"collab-pass", str(_events(pw))) is None  # no password in the audit
