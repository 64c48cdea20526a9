"""The audit chain end to end: a real agent, the real `ml`, the database tampered with by sqlite3.

Each kind of change (edit, delete, insert, reorder, truncate the tail) is found by
``ml jupyter audit --verify`` (exit 9, the kind named, the webhook fired); exports carry digests
and ``--verify-export`` catches an edited copy; a retention purge leaves a verifiable chain; a
GDPR erase leaves a verifiable chain and no trace of the name in the database or the exports.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from fetchml_agent.auth import api_key_verifier
from tests.conftest import KEYS, AgentProcess, free_port

ERASABLE = "dora.quist"
KEYS[ERASABLE] = "key-dora-0123456789"


def _events(agent: AgentProcess, count: int, prefix: str) -> list[str]:
    """Writes audit events through real operations: workspace-less checks and grants."""
    names = []
    for i in range(count):
        agent.ml("jupyter", "check-package", f"{prefix}pkg{i}", user="bob", check=False)
        names.append(f"{prefix}pkg{i}")
    return names


def _db(agent: AgentProcess) -> sqlite3.Connection:
    return sqlite3.connect(agent.data_dir / "agent.db", isolation_level=None)


def _verify(agent: AgentProcess) -> tuple[int, dict[str, Any]]:
    cp = agent.ml("jupyter", "audit", "--verify", "--json", check=False)
    return cp.returncode, json.loads(cp.stdout)


def _last_id(agent: AgentProcess) -> int:
    conn = _db(agent)
    try:
        return int(conn.execute("SELECT max(id) FROM audit").fetchone()[0])
    finally:
        conn.close()


class _Hooks(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        _Hooks.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hooked_agent(tmp_path: Path):
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hooks.received.clear()
    agent = AgentProcess(tmp_path / "agent", free_port(), {"webhooks": [
        {"events": ["audit_chain_broken"], "actions": ["http_post"],
         "url": f"http://127.0.0.1:{server.server_address[1]}/hook"}]})
    agent.start()
    yield agent
    agent.stop()
    server.shutdown()


def test_the_key_is_created_at_first_start_outside_the_database(hooked_agent: AgentProcess) -> None:
    key = hooked_agent.data_dir / "keys" / "audit.key"
    assert key.stat().st_mode & 0o777 == 0o600 and (key.parent.stat().st_mode & 0o777) == 0o700
    code, doc = _verify(hooked_agent)
    assert code == 0 and doc["ok"] and doc["first_bad"] is None
    plain = hooked_agent.ml("jupyter", "audit", "--verify")
    assert "audit chain: intact" in plain.stdout
    assert hooked_agent.ml("jupyter", "audit", "--verify", user="bob", check=False).returncode == 3


TAMPERING = {
    "edited": "UPDATE audit SET event = replace(event, '\"outcome\":\"allow\"', '\"outcome\":\"deny\"') WHERE id = {n}",
    "deleted": "DELETE FROM audit WHERE id = {n}",
    "reordered": "UPDATE audit SET id = -1 WHERE id = {n}; UPDATE audit SET id = {n} WHERE id = {n} + 1;"
                 " UPDATE audit SET id = {n} + 1 WHERE id = -1",
    "inserted": "INSERT INTO audit (id, event, digest, personal, salt) SELECT id + 1000, replace(event, "
                "'\"id\":' || id, '\"id\":' || (id + 1000)), digest, personal, salt FROM audit WHERE id = {last}",
    "truncated": "DELETE FROM audit WHERE id > {n}",
}


@pytest.mark.parametrize("kind", list(TAMPERING))
def test_verify_finds_each_kind_of_tampering(hooked_agent: AgentProcess, kind: str) -> None:
    _events(hooked_agent, 6, kind[:3])
    last = _last_id(hooked_agent)
    n = last - 3
    conn = _db(hooked_agent)
    conn.executescript(TAMPERING[kind].format(n=n, last=last))
    conn.close()
    code, doc = _verify(hooked_agent)
    assert code == 9, doc
    assert doc["ok"] is False and doc["first_bad"]["kind"] == kind, doc
    expected = {"inserted": last + 1000, "truncated": n + 1}.get(kind, n)
    assert doc["first_bad"]["id"] == expected and doc["checked"] >= n - 1
    human = hooked_agent.ml("jupyter", "audit", "--verify", check=False)
    # The first verify appended its own event after the signed head: a cut tail is now a gap.
    again = "deleted" if kind == "truncated" else kind
    assert human.returncode == 9 and f"BROKEN at event {expected}: {again}" in human.stderr
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not _Hooks.received:
        time.sleep(0.1)
    hook = _Hooks.received[0]
    assert hook["event"] == "audit_chain_broken" and hook["details"]["kind"] == kind


def test_the_edit_in_the_issue_is_caught(hooked_agent: AgentProcess) -> None:
    """Changing who did something, and deleting package.install rows: both break the chain."""
    _events(hooked_agent, 3, "who")
    conn = _db(hooked_agent)
    row = conn.execute("SELECT id FROM audit WHERE user = 'bob' ORDER BY id LIMIT 1").fetchone()
    with pytest.raises(sqlite3.OperationalError):  # the column is generated from what the chain commits to
        conn.execute("UPDATE audit SET user = 'carol' WHERE id = ?", row)
    conn.execute("UPDATE audit SET personal = json_set(personal, '$.user', 'carol') WHERE id = ?", row)
    conn.close()
    code, doc = _verify(hooked_agent)
    assert code == 9 and doc["first_bad"]["kind"] == "edited" and doc["first_bad"]["id"] == row[0]
    assert "personal fields" in doc["first_bad"]["message"]


def test_workspace_trail_by_id_export_and_verify_export(fresh_agent: AgentProcess, tmp_path: Path) -> None:
    fresh_agent.start()
    fresh_agent.ml("jupyter", "create", "trail", user="bob")
    fresh_agent.ml("jupyter", "access", "trail", "--user=carol", "--role=viewer", user="bob")
    first_id = fresh_agent.ml_json("jupyter", "info", "trail")["id"]
    fresh_agent.ml("jupyter", "delete", "trail", "--yes", user="bob")
    fresh_agent.ml("jupyter", "create", "trail", user="carol")
    fresh = fresh_agent.ml_json("jupyter", "audit", "trail", user="carol")
    assert [e["action"] for e in fresh["events"]] == ["workspace.create"]  # none of the old one's history
    assert fresh["events"][0]["workspace_id"] != first_id
    old = [e for e in fresh_agent.ml_json("jupyter", "audit")["events"] if e["workspace_id"] == first_id]
    assert [e["action"] for e in old][:3] == ["workspace.delete", "access.grant", "workspace.create"]
    assert old[1]["details"]["principal"] == "user:carol"  # personal fields read back merged

    csv_out = fresh_agent.ml("jupyter", "audit", "--export=csv").stdout
    assert csv_out.splitlines()[0].endswith("digest")
    json_out = fresh_agent.ml("jupyter", "audit", "--export=json").stdout
    assert all(len(e["digest"]) == 64 for e in json.loads(json_out)["events"])
    copy_csv, copy_json = tmp_path / "audit.csv", tmp_path / "audit.json"
    copy_csv.write_text(csv_out)
    copy_json.write_text(json_out)
    for copy in (copy_csv, copy_json):
        cp = fresh_agent.ml("jupyter", "audit", "--verify-export", str(copy))
        assert "matches" in cp.stdout or "intact" in cp.stdout
    doc = json.loads(json_out)
    doc["events"][-1]["outcome"] = "denied"
    copy_json.write_text(json.dumps(doc))
    cp = fresh_agent.ml("jupyter", "audit", "--verify-export", str(copy_json), "--json", check=False)
    result = json.loads(cp.stdout)
    assert cp.returncode == 9 and result["first_bad"]["id"] == doc["events"][-1]["id"]
    assert "outcome" in result["first_bad"]["message"]
    fresh_agent.ml("jupyter", "delete", "trail", "--yes", user="carol")


def test_retention_purge_then_the_chain_still_verifies(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path / "agent", free_port(), {"retention": {"audit": "2s", "runs": "30d"}})
    agent.start()
    try:
        _events(agent, 5, "old")
        time.sleep(2.5)
        _events(agent, 2, "new")
        plan = agent.ml_json("admin", "retention", "--dry-run")["plan"]
        assert plan["audit"]["events"] >= 5 and plan["runs"]["enforced"] is True
        table = agent.ml("admin", "retention", "--dry-run").stdout
        assert "audit" in table and "runs" in table
        through = plan["audit"]["through_id"]
        done = agent.ml_json("admin", "retention", "--run")
        assert done["removed"]["audit"]["through_id"] >= through
        code, doc = _verify(agent)
        assert code == 0 and doc["ok"], doc
        assert any("purged by retention" in n for n in doc["notes"])
        conn = _db(agent)
        assert conn.execute("SELECT count(*) FROM audit WHERE id <= ?", (through,)).fetchone()[0] == 0
        conn.execute("DELETE FROM audit_checkpoints")  # a purge without its checkpoint is a deletion
        conn.close()
        code, doc = _verify(agent)
        assert code == 9 and doc["first_bad"]["kind"] == "deleted"
        assert [e for e in agent.ml_json("jupyter", "audit", "--action", "retention.purge")["events"]]
    finally:
        agent.stop()


def test_gdpr_export_and_erase(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path / "agent", free_port())
    agent.write_config()
    import yaml

    doc = yaml.safe_load(agent.config_path.read_text())
    doc["users"].append({"name": ERASABLE, "role": "user", "api_key_verifier": api_key_verifier(KEYS[ERASABLE])})
    agent.config_path.write_text(yaml.safe_dump(doc))
    agent.start()
    try:
        agent.ml("jupyter", "create", "doras-ws", user=ERASABLE)
        agent.ml("jupyter", "access", "doras-ws", "--user=bob", "--role=editor", user=ERASABLE)
        agent.ml("jupyter", "create", "bobs-ws", user="bob")
        agent.ml("jupyter", "access", "bobs-ws", f"--user={ERASABLE}", "--role=viewer", user="bob")
        agent.ml("jupyter", "request", "bobs-ws", "custom-thing", "--reason", f"{ERASABLE} needs it", user="bob",
                 check=False)
        archive = tmp_path / "export.zip"
        agent.ml("admin", "user", "export", ERASABLE, "-o", str(archive))
        with zipfile.ZipFile(archive) as z:
            names = set(z.namelist())
            assert {"account.json", "grants.csv", "workspaces_owned.json", "audit_events.csv", "runs.json",
                    "package_requests.json"} <= names
            assert json.loads(z.read("account.json"))[0]["name"] == ERASABLE
            assert [w["name"] for w in json.loads(z.read("workspaces_owned.json"))] == ["doras-ws"]
            assert [g["workspace"] for g in json.loads(z.read("grants.json"))] == ["bobs-ws"]
            assert len(json.loads(z.read("audit_events.json"))) >= 3

        refused = agent.ml("admin", "user", "erase", ERASABLE, "--yes", check=False)
        assert refused.returncode == 4 and "owns workspaces: doras-ws" in refused.stderr
        erased = agent.ml_json("admin", "user", "erase", ERASABLE, "--transfer-to", "carol", "--yes")
        assert erased["transferred"] == ["doras-ws"] and erased["pseudonym"].startswith("erased-")
        assert "users[3]" in erased["agent_yaml"] and erased["remaining"] == {}

        code, verified = _verify(agent)
        assert code == 0 and verified["ok"], verified
        assert agent.ml_json("jupyter", "info", "doras-ws", user="carol")["owner"] == "carol"
        denied = agent.ml("jupyter", "list", user=ERASABLE, check=False)
        assert denied.returncode == 3
        export = agent.ml("jupyter", "audit", "--export=csv").stdout + agent.ml("jupyter", "audit", "--export=json").stdout
        assert ERASABLE not in export and erased["pseudonym"] in export
        agent.stop()
        for path in agent.data_dir.glob("agent.db*"):
            assert ERASABLE.encode() not in path.read_bytes(), path
        agent.start()  # the key stays refused after a restart; the admin is told which entry to delete
        assert agent.ml("jupyter", "list", user=ERASABLE, check=False).returncode == 3
        assert "users[3]" in (agent.root / "agent.log").read_text()
        status = agent.ml_json("status")
        assert status["audit"]["erased_accounts_in_config"] == ["users[3]"]
        assert _verify(agent)[0] == 0
        erase_event = agent.ml_json("jupyter", "audit", "--action", "user.erase")["events"][0]
        assert erase_event["details"]["subject"] == erased["pseudonym"]
        agent.ml("jupyter", "delete", "doras-ws", "--yes", user="carol")
        agent.ml("jupyter", "delete", "bobs-ws", "--yes", user="bob")
    finally:
        agent.cleanup_workspaces()
        agent.stop()
