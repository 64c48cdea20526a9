"""Package requests and install records in SQLite: joining, deciding once, cascading deletes."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator

import pytest

from fetchml_agent.store import open_connection
from fetchml_agent.store.packages import (
    InstallRecord,
    add_request,
    approved_requests,
    clear_installs,
    decide_request,
    get_request,
    list_installs,
    list_requests,
    record_installs,
)
from fetchml_agent.store.sealed import Sealer
from fetchml_agent.store.workspaces import Workspace, delete_workspace, insert_workspace


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    c = open_connection(":memory:")
    for wid, name in (("ws-1", "one"), ("ws-2", "two")):
        insert_workspace(c, Workspace(id=wid, name=name, owner="bob", path=f"/tmp/{name}", runtime="local",
                                      token="t", index_key=f"key-{name}", created_at=time.time(),
                                      updated_at=time.time()), Sealer(bytes(32)))
    yield c
    c.close()


def test_a_second_request_for_the_same_key_joins_the_open_one(conn: sqlite3.Connection) -> None:
    first, created = add_request(conn, "ws-1", "one", "custom-package", ">=1", False, "bob", "custom-package>=1", "a")
    assert created and first["id"].startswith("req-") and first["status"] == "pending"
    second, created = add_request(conn, "ws-1", "one", "custom-package", ">=1", False, "carol", "Custom_Package>=1", "b")
    assert not created and second["id"] == first["id"]
    assert [(r["requester"], r["reason"], r["spec"]) for r in second["requesters"]] == [
        ("bob", "a", "custom-package>=1"), ("carol", "b", "Custom_Package>=1")]
    # another range, another installer or another workspace is another request
    assert add_request(conn, "ws-1", "one", "custom-package", "", False, "bob", "custom-package", "")[1]
    assert add_request(conn, "ws-1", "one", "custom-package", ">=1", True, "bob", "custom-package", "")[1]
    assert add_request(conn, "ws-2", "two", "custom-package", ">=1", False, "bob", "custom-package>=1", "")[1]
    assert len(list_requests(conn, status="pending")) == 4
    assert [r["id"] for r in list_requests(conn, requester="carol")] == [first["id"]]
    assert len(list_requests(conn, workspace_id="ws-2")) == 1


def test_deciding_is_atomic_and_happens_once(conn: sqlite3.Connection) -> None:
    req, _ = add_request(conn, "ws-1", "one", "tensorflow", "", False, "bob", "tensorflow", "")
    doc, changed = decide_request(conn, req["id"], "approved", "admin", "ok")
    assert changed and doc is not None and doc["status"] == "approved" and doc["decided_by"] == "admin"
    doc, changed = decide_request(conn, req["id"], "denied", "admin", "no")
    assert not changed and doc is not None and doc["status"] == "approved" and doc["decision_reason"] == "ok"
    assert decide_request(conn, "req-missing", "approved", "admin", "") == (None, False)
    assert approved_requests(conn) == [("ws-1", "tensorflow", "", False)]
    # once decided, the same key can be asked for again
    again, created = add_request(conn, "ws-1", "one", "tensorflow", "", False, "bob", "tensorflow", "again")
    assert created and again["id"] != req["id"]


def test_install_records_keep_the_latest_install_and_go_with_the_workspace(conn: sqlite3.Connection) -> None:
    rec = InstallRecord("alpha", "alpha", "1.0", "alpha==1.0", True, "pip", False, "bob", 1.0)
    record_installs(conn, "ws-1", [rec, InstallRecord("beta", "Beta", "1.0", "", False, "pip", False, "bob", 1.0)])
    record_installs(conn, "ws-1", [InstallRecord("alpha", "alpha", "2.0", "alpha", True, "pip", True, "admin", 2.0)])
    rows = {r.name: r for r in list_installs(conn, "ws-1")}
    assert rows["alpha"].version == "2.0" and rows["alpha"].installed_by == "admin" and rows["alpha"].forced
    assert rows["beta"].to_dict()["name"] == "Beta" and rows["beta"].requested is False
    clear_installs(conn, "ws-1")
    assert list_installs(conn, "ws-1") == []
    record_installs(conn, "ws-2", [rec])
    req, _ = add_request(conn, "ws-2", "two", "x", "", False, "bob", "x", "")
    delete_workspace(conn, "ws-2")
    assert list_installs(conn, "ws-2") == [] and get_request(conn, req["id"]) is None
