"""Every cell of the role table, in a real JupyterLab on the local runtime, as each kind of person.

The expectations come from the agent's one role table (fetchml_agent.access.roles), and the
issue's minimum is asserted on top: a viewer reads but starts no kernel, writes nothing, opens no
terminal; a collaborator also runs kernels and edits notebooks; an editor also manages files and
terminals. A revoked person's old URL and a stranger's forged token get nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from fetchml_agent.access.roles import permissions_for

from .conftest import PEOPLE, World
from .lab import Lab, execute, send_execute

pytestmark = pytest.mark.slow

NOTEBOOK = {"type": "notebook", "format": "json", "content": {
    "cells": [{"cell_type": "code", "source": "6*7", "metadata": {}, "outputs": [], "execution_count": None}],
    "metadata": {}, "nbformat": 4, "nbformat_minor": 5}}
TEXT = {"type": "file", "format": "text", "content": "hello"}


def _kernel_ws(lab: Lab, ctx: dict[str, Any]) -> int:
    try:
        with lab.kernel_ws(ctx["kernel"]) as ws:
            assert execute(ws, "6*7").strip() == "42"
            return 200
    except InvalidStatus as exc:
        return exc.response.status_code


CELLS: dict[str, tuple[tuple[str, str], Callable[[Lab, dict[str, Any]], int]]] = {
    "read a notebook": (("read", "contents"), lambda lab, c: lab.call("GET", "api/contents/notes.ipynb")[0]),
    "download a file": (("read", "contents"), lambda lab, c: lab.call("GET", "files/data.txt", query="download=1")[0]),
    "save the notebook": (("write", "notebooks"), lambda lab, c: lab.call("PUT", "api/contents/notes.ipynb", NOTEBOOK)[0]),
    "create a file": (("write", "contents"), lambda lab, c: lab.call("PUT", f"api/contents/new-{c['who']}.txt", TEXT)[0]),
    "delete a file": (("write", "contents"), lambda lab, c: lab.call("DELETE", f"api/contents/victim-{c['who']}.txt")[0]),
    "list kernels": (("read", "kernels"), lambda lab, c: lab.call("GET", "api/kernels")[0]),
    "start a kernel": (("write", "kernels"), lambda lab, c: lab.call("POST", "api/kernels", {"name": "python3"})[0]),
    "run code (kernel WebSocket)": (("execute", "kernels"), _kernel_ws),
    "list sessions": (("read", "sessions"), lambda lab, c: lab.call("GET", "api/sessions")[0]),
    "open a notebook with a kernel": (("write", "sessions"), lambda lab, c: lab.call(
        "POST", "api/sessions", {"path": "notes.ipynb", "type": "notebook", "name": "", "kernel": {"name": "python3"}})[0]),
    "list terminals": (("read", "terminals"), lambda lab, c: lab.call("GET", "api/terminals")[0]),
    "open a terminal": (("write", "terminals"), lambda lab, c: lab.call("POST", "api/terminals")[0]),
    "change a JupyterLab setting": (("write", "config"), lambda lab, c: lab.call(
        "PUT", "lab/api/settings/@jupyterlab/apputils-extension:themes", {"raw": '{"theme-scrollbars": true}'})[0]),
}
PERSONS = ["viewer", "collaborator", "editor", "owner", "revoked", "stranger"]


@pytest.fixture(scope="module")
def ctx(world: World) -> dict[str, Any]:
    owner = world.lab("owner")
    assert owner.call("PUT", "api/contents/notes.ipynb", NOTEBOOK)[0] in (200, 201)
    assert owner.call("PUT", "api/contents/data.txt", TEXT)[0] in (200, 201)
    for who in PERSONS:
        assert owner.call("PUT", f"api/contents/victim-{who}.txt", TEXT)[0] in (200, 201)
    status, kernel = owner.call("POST", "api/kernels", {"name": "python3"})
    assert status == 201, kernel
    return {"kernel": kernel["id"]}


def _lab(world: World, who: str) -> Lab:
    if who == "stranger":
        # No role, so no URL of her own: a token made up in the personal-token format.
        return Lab(world.base, "fmlp.Z3JhY2U.ws-000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    return world.lab(who)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("who", PERSONS)
def test_role_table_cell(world: World, ctx: dict[str, Any], who: str, cell: str) -> None:
    pair, request = CELLS[cell]
    status = request(_lab(world, who), {**ctx, "who": who})
    if who in ("revoked", "stranger"):
        # /files/ is a browser page: no credential there means the login page (302), not data.
        refused = (401, 403, 302) if cell == "download a file" else (401, 403)
        assert status in refused, f"{who}: {cell} answered {status}"
    elif pair in permissions_for(who):
        assert 200 <= status < 300, f"{who}: {cell} answered {status}"
    else:
        assert status == 403, f"{who}: {cell} answered {status}"


def test_the_issue_minimum_is_in_the_table() -> None:
    viewer, collab, editor = (permissions_for(r) for r in ("viewer", "collaborator", "editor"))
    assert ("read", "contents") in viewer
    assert not {("write", "kernels"), ("execute", "kernels"), ("write", "contents"), ("write", "notebooks"),
                ("write", "terminals")} & viewer
    assert {("execute", "kernels"), ("write", "notebooks")} <= collab and ("write", "terminals") not in collab
    assert {("write", "contents"), ("write", "terminals"), ("execute", "terminals")} <= editor


def test_refusal_names_the_role_needed(world: World) -> None:
    status, doc = world.lab("viewer").call("POST", "api/kernels", {"name": "python3"})
    assert status == 403
    assert "collaborator role" in doc["message"] and "you are viewer" in doc["message"]
    status, doc = world.lab("collaborator").call("POST", "api/terminals")
    assert status == 403 and "editor role" in doc["message"]


def test_each_person_has_their_own_url_and_identity(world: World) -> None:
    tokens = {role: url.split("token=")[1] for role, url in world.urls.items()}
    assert len(set(tokens.values())) == len(tokens)  # nobody gets anyone else's credential
    status, me = world.lab("collaborator").call("GET", "api/me")
    assert status == 200
    ident = me["identity"]
    assert (ident["username"], ident["display_name"], ident["initials"], ident["role"]) == (
        "dave", "Dave Collab", "DC", "collaborator")
    assert ident["color"].startswith("#")
    # The server's own credential is not what anyone's URL carries, and the page hides it.
    status, page = world.lab("viewer", browser=True).call("GET", "lab", query="token=" + tokens["viewer"])
    assert status == 200 and '"token": ""' in page


def test_stranger_cannot_get_a_url(world: World) -> None:
    cp = world.agent.ml("jupyter", "info", world.workspace, user=PEOPLE["stranger"], check=False)
    assert cp.returncode == 4 and "no workspace" in cp.stderr, cp.stderr  # as if there were none


def _notebook_kernel(lab: Lab) -> str:
    status, session = lab.call("POST", "api/sessions", {"path": "notes.ipynb", "type": "notebook", "name": "",
                                                         "kernel": {"name": "python3"}})
    assert status == 201, session
    return str(session["kernel"]["id"])


def _executions(world: World, user: str, **details: Any) -> list[dict[str, Any]]:
    events = world.agent.ml_json("jupyter", "audit", world.workspace, user="bob")["events"]
    return [e for e in events if e["user"] == user and e["action"] == "jupyter.execute"
            and all(e["details"].get(k) == v for k, v in details.items())]


def test_an_execution_is_audited_when_the_client_leaves_before_the_reply(world: World, ctx: dict[str, Any]) -> None:
    """The cause of a flaky audit: the execute_reply reaches the server after the client closed
    (clients stop at the idle status, which can overtake the reply); the execution was lost."""
    import time

    lab = world.lab("collaborator")
    with lab.kernel_ws(_notebook_kernel(lab)) as ws:
        send_execute(ws, "import time; time.sleep(0.5)")  # and leave at once, before any answer
    deadline = time.monotonic() + 20
    while not (found := _executions(world, "dave", path="notes.ipynb", status="closed")):
        assert time.monotonic() < deadline, "the execution of a client that left was never audited"
        time.sleep(0.5)
    assert found[0]["details"]["kernel_id"] and "time.sleep" not in str(found[0]["details"])


def test_audit_records_who_did_what(world: World, ctx: dict[str, Any]) -> None:
    import time

    began = time.time() - 1
    lab = world.lab("collaborator")
    with lab.kernel_ws(_notebook_kernel(lab)) as ws:
        assert execute(ws, "import time; time.sleep(0.2); 1").strip() == "1"
    assert lab.call("PUT", "api/contents/notes.ipynb", NOTEBOOK)[0] == 200
    assert lab.call("GET", "files/data.txt", query="download=1")[0] == 200
    assert world.lab("viewer").call("POST", "api/kernels", {"name": "python3"})[0] == 403

    def this_test(e: dict[str, Any], user: str, action: str, **details: Any) -> bool:
        return (e["user"] == user and e["action"] == action and e["ts"] >= began
                and all(e["details"].get(k) == v for k, v in details.items()))

    # Events reach the agent in batches once a second: wait for every one asserted on below.
    wanted: dict[str, Any] = {
        "execute": lambda e: this_test(e, "dave", "jupyter.execute", path="notes.ipynb")
        and e["details"]["duration_s"] >= 0.2,
        "save": lambda e: this_test(e, "dave", "jupyter.save", path="notes.ipynb"),
        "download": lambda e: this_test(e, "dave", "jupyter.download", path="data.txt"),
        "denied": lambda e: e["user"] == "carol" and e["action"] == "jupyter.denied",
    }
    deadline = time.monotonic() + 20
    while True:
        events = world.agent.ml_json("jupyter", "audit", world.workspace, user="bob")["events"]
        found = {k: [e for e in events if match(e)] for k, match in wanted.items()}
        if all(found.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert all(found.values()), f"missing from the audit: {[k for k, v in found.items() if not v]}"
    executed = found["execute"][0]
    assert executed["details"]["status"] == "ok" and executed["details"]["kernel_id"]
    assert "code" not in executed["details"] and "time.sleep" not in str(executed["details"])
    assert all(e["outcome"] == "denied" for e in found["denied"])
