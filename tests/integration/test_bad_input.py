"""Bad input is answered with its own code, never 0x00, and never hurts another request.

Names are matched whole and never shaped like a service id; a NUL byte or an overlong path
component is 0x06 with the reason; concurrent creates of one name give one success and 0x05 for
the rest; ``build`` with package text that does not parse is 0x06 even where the runtime cannot
build; a non-admin's ``--workspace`` is never the managed root, never inside it, never inside or
around another workspace's directory (after resolving symbolic links); a workspace someone may
not see answers "not found" without naming its owner.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from fetchml_agent.client import Client
from fetchml_agent.errors import ErrorCode, FetchmlError
from fetchml_agent.protocol import Opcode
from tests.conftest import KEYS, AgentProcess


def _call(agent: AgentProcess, opcode: Opcode, args: dict[str, Any], user: str = "admin") -> Any:
    with Client(agent.ws_url, KEYS[user], timeout=180) as c:
        return c.call(opcode, args)


def _code(agent: AgentProcess, opcode: Opcode, args: dict[str, Any], user: str = "admin") -> tuple[int, str]:
    try:
        _call(agent, opcode, args, user)
    except FetchmlError as exc:
        return int(exc.code), str(exc)
    return -1, "succeeded"


@pytest.mark.parametrize("name, reason", [
    ("abc\n", "invalid workspace name"),
    ("ws-0123456789ab", "looks like a service id"),
    ("a\x00b", "NUL byte"),
])
def test_names_are_matched_whole(agent: AgentProcess, name: str, reason: str) -> None:
    for opcode, args in ((Opcode.CREATE_WORKSPACE, {"name": name}), (Opcode.START_JUPYTER, {"name": name})):
        code, text = _code(agent, opcode, args)
        assert code == ErrorCode.INVALID_ARGUMENT and reason in text, (opcode, text)
    assert name not in {s["name"] for s in agent.ml_json("jupyter", "list")["services"]}


@pytest.mark.parametrize("workspace, reason", [
    ("/tmp/with\x00nul", "NUL byte"),
    ("/tmp/" + "a" * 300, "300 bytes long"),
    ("/tmp/" + "/".join(["abcdefgh"] * 500), "bytes long"),
])
def test_paths_that_cannot_name_a_file_are_0x06(agent: AgentProcess, workspace: str, reason: str) -> None:
    for opcode in (Opcode.START_JUPYTER, Opcode.CREATE_WORKSPACE):
        code, text = _code(agent, opcode, {"name": "odd-path", "workspace": workspace})
        assert code == ErrorCode.INVALID_ARGUMENT and reason in text, (opcode, text)


def test_build_with_package_text_that_does_not_parse_is_0x06(agent: AgentProcess) -> None:
    for packages in (["numpy 'unclosed"], ["===="], ["numpy", ";;"]):
        code, text = _code(agent, Opcode.BUILD_IMAGE, {"name": "x", "base": "fetchml/workspace:0.1.0", "packages": packages})
        assert code == ErrorCode.INVALID_ARGUMENT, (packages, text)
    # Valid text reaches the runtime, which says what it cannot do.
    code, _ = _code(agent, Opcode.BUILD_IMAGE, {"name": "x", "base": "fetchml/workspace:0.1.0", "packages": ["numpy"]})
    assert code == ErrorCode.NOT_SUPPORTED


def test_concurrent_creates_of_one_name(agent: AgentProcess, unique_name: str) -> None:
    barrier = threading.Barrier(5)
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def create() -> None:
        with Client(agent.ws_url, KEYS["admin"], timeout=180) as c:
            c.call(Opcode.LIST_JUPYTER)  # connected and past the hello before the race starts
            barrier.wait()
            try:
                c.call(Opcode.CREATE_WORKSPACE, {"name": unique_name})
                outcome = (0, "ok")
            except FetchmlError as exc:
                outcome = (int(exc.code), exc.message)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=create) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    try:
        assert sorted(code for code, _ in results) == [0] + [int(ErrorCode.ALREADY_EXISTS)] * 4, results
        assert [s["name"] for s in agent.ml_json("jupyter", "list")["services"]].count(unique_name) == 1
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes", check=False)


def test_workspace_dirs_of_a_plain_user(fresh_agent: AgentProcess, tmp_path: Path) -> None:
    roots = tmp_path / "roots"
    (roots / "bob").mkdir(parents=True)
    fresh_agent.extra = {"local": {"workspace_roots": [str(roots)]}}
    with fresh_agent.running() as a:
        managed = a.data_dir / "workspaces"
        link = roots / "sneaky"
        link.symlink_to(managed)
        mine = a.ml_json("jupyter", "start", "--name", "bobs", "--workspace", str(roots / "bob" / "ws"), user="bob")
        assert Path(mine["path"]) == (roots / "bob" / "ws").resolve()
        cases = [
            (str(managed), "inside the agent's managed workspaces"),
            (str(managed / "peek"), "inside the agent's managed workspaces"),
            (str(link), "inside the agent's managed workspaces"),  # a symbolic link to it
            (str(a.data_dir), "contains the agent's managed workspaces"),
            (str(roots / "bob"), "overlaps the directory of another workspace"),  # contains bobs
            (str(roots / "bob" / "ws" / "inner"), "overlaps the directory of another workspace"),
            ("/usr", "outside the directories you may use"),
        ]
        for path, text in cases:
            for user in ("bob", "carol"):
                code, msg = _code(a, Opcode.START_JUPYTER, {"name": "peek", "workspace": path}, user=user)
                assert code == ErrorCode.PERMISSION_DENIED and text in msg, (path, user, msg)
                assert "bobs" not in msg  # the other workspace is not named
        assert "peek" not in {s["name"] for s in a.ml_json("jupyter", "list")["services"]}


def test_a_workspace_you_may_not_see_is_not_found(agent: AgentProcess, unique_name: str) -> None:
    agent.ml("jupyter", "create", unique_name, user="bob")
    try:
        for argv in (["info", unique_name], ["stop", unique_name], ["delete", unique_name, "--yes"],
                     ["access", unique_name, "--user=carol", "--role=owner"], ["restart", unique_name]):
            cp = agent.ml("jupyter", *argv, user="carol", check=False)
            assert cp.returncode == 4 and "no workspace or service named" in cp.stderr, (argv, cp.stderr)
            assert "bob" not in cp.stderr, (argv, cp.stderr)
        # Seen through a grant, a missing role is named (and the owner may be).
        agent.ml("jupyter", "access", unique_name, "--user=carol", "--role=viewer", user="bob")
        cp = agent.ml("jupyter", "stop", unique_name, user="carol", check=False)
        assert cp.returncode == 3 and "collaborator" in cp.stderr
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes", user="bob", check=False)


def test_no_bad_input_is_an_internal_error(agent: AgentProcess) -> None:
    """A sweep of odd values over every operation that takes a name or a path: no 0x00."""
    odd = ["", "\n", "x" * 70000, "a\x00", "../..", "/", "ws-000000000000", "\udcff"]
    ops = [Opcode.CREATE_WORKSPACE, Opcode.WORKSPACE_INFO, Opcode.DELETE_WORKSPACE, Opcode.STOP_JUPYTER,
           Opcode.QUEUE_RUN, Opcode.WORKSPACE_STATUS]
    for opcode in ops:
        for value in odd:
            args = {"name": value, "service_id": value, "workspace": value, "notebook": value}
            try:
                code, text = _code(agent, opcode, args)
            except UnicodeEncodeError:
                continue  # a lone surrogate cannot even be sent as JSON text
            assert code != ErrorCode.UNKNOWN, (opcode, value[:20], text)
