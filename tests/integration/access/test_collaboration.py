"""Live collaboration under the roles, with real clients on the collaboration WebSocket.

Two collaborators (dave, grace) and a viewer (carol) open one notebook through jupyter-collaboration
with pycrdt's own client classes (Doc, Provider, Awareness), each with their personal token. Both
collaborators' edits reach everyone; each sees the other's presence with the name the agent gave
(``/api/me``); the viewer sees the edits live, and her own edit reaches no one and not the file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from jupyter_ydoc import YNotebook
from pycrdt import Awareness, Decoder, Doc, Provider, YMessageType, create_awareness_message
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import AgentProcess, free_port

from .conftest import users
from .lab import Lab, base_and_token

pytestmark = pytest.mark.slow

NOTEBOOK = {"type": "notebook", "format": "json", "content": {
    "cells": [{"cell_type": "code", "id": "c1", "source": "x = 1\n", "metadata": {}, "outputs": [],
               "execution_count": None}],
    "metadata": {}, "nbformat": 4, "nbformat_minor": 5}}


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Lab]]:
    a = AgentProcess(tmp_path_factory.mktemp("collab"), free_port(), {"users": users()})
    with a.running():
        yield make_team(a)


def make_team(a: AgentProcess) -> dict[str, Lab]:
    """Workspace ``collab`` of bob's, with two collaborators and a viewer; each person's Lab."""
    a.ml("jupyter", "create", "collab", user="bob")
    for who, role in (("dave", "collaborator"), ("grace", "collaborator"), ("carol", "viewer")):
        a.ml("jupyter", "access", "collab", f"--user={who}", f"--role={role}", user="bob")
    labs = {who: Lab(*base_and_token(a.ml_json("jupyter", "info", "collab", user=who)["url"]))
            for who in ("bob", "dave", "grace", "carol")}
    assert labs["bob"].call("PUT", "api/contents/shared.ipynb", NOTEBOOK)[0] == 201
    return labs


class Channel:
    """pycrdt's Channel over a WebSocket; awareness messages go to an Awareness, the rest to the Provider."""

    def __init__(self, ws: Any, path: str, awareness: Awareness) -> None:
        self.ws, self._path, self.awareness = ws, path, awareness

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> Channel:
        return self

    async def __anext__(self) -> bytes:
        while True:
            try:
                message = await self.ws.recv()
            except ConnectionClosed:
                raise StopAsyncIteration from None
            if message[0] == YMessageType.AWARENESS:
                self.awareness.apply_awareness_update(Decoder(message[1:]).read_message(), "remote")
                continue
            return bytes(message)

    async def send(self, message: bytes) -> None:
        await self.ws.send(message)

    async def recv(self) -> bytes:
        return await self.__anext__()


class Client:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.doc = Doc()
        self.notebook = YNotebook(self.doc)
        self.awareness = Awareness(self.doc)

    async def __aenter__(self) -> Client:
        status, session = await asyncio.to_thread(
            self.lab.call, "PUT", "api/collaboration/session/shared.ipynb", {"format": "json", "type": "notebook"})
        assert status in (200, 201), session
        room = f"json:notebook:{session['fileId']}"
        url = self.lab.base.replace("http://", "ws://") + f"api/collaboration/room/{room}?sessionId={session['sessionId']}"
        self._ws_cm = connect(url, additional_headers={"Authorization": f"token {self.lab.token}"}, max_size=None)
        self.ws = await self._ws_cm.__aenter__()
        self.channel = Channel(self.ws, room, self.awareness)
        self.provider = Provider(self.doc, self.channel)
        await self.provider.__aenter__()
        await asyncio.wait_for(self.provider.synced.wait(), 30)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._ws_cm.__aexit__(*exc)  # the provider's reader ends with the connection
        await self.provider.__aexit__(None, None, None)

    async def announce(self) -> dict[str, Any]:
        """Set our presence as JupyterLab does: the identity the server gives at /api/me."""
        status, me = await asyncio.to_thread(self.lab.call, "GET", "api/me")
        assert status == 200
        self.awareness.set_local_state({"user": me["identity"]})
        await self.ws.send(create_awareness_message(self.awareness.encode_awareness_update([self.doc.client_id])))
        return dict(me["identity"])

    def source(self) -> str:
        return str(self.notebook.get_cell(0)["source"])

    def append(self, text: str) -> None:
        cell_source = self.notebook.ycells[0]["source"]
        cell_source += text


async def _until(predicate: Any, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.1)


def test_two_collaborators_and_a_viewer(team: dict[str, Lab]) -> None:
    async def scenario() -> None:
        async with Client(team["dave"]) as dave, Client(team["grace"]) as grace, Client(team["carol"]) as carol:
            dave_id, grace_id = await dave.announce(), await grace.announce()
            await carol.announce()
            dave.append("y = 2  # dave\n")
            grace.append("z = 3  # grace\n")
            for c in (dave, grace, carol):
                await _until(lambda c=c: "# dave" in c.source() and "# grace" in c.source())
            # Presence: each collaborator sees the other with the name and colour the agent gave.
            await _until(lambda: any(s.get("user", {}).get("username") == "grace"
                                     for s in dave.awareness.states.values()))
            seen = next(s["user"] for s in dave.awareness.states.values() if s.get("user", {}).get("username") == "grace")
            assert seen["display_name"] == grace_id["display_name"] and seen["color"] == grace_id["color"]
            await _until(lambda: any(s.get("user", {}).get("display_name") == dave_id["display_name"]
                                     for s in grace.awareness.states.values()))
            # The viewer's edit reaches nobody.
            carol.append("boom()  # carol\n")
            dave.append("w = 4  # after\n")
            await _until(lambda: "# after" in grace.source() and "# after" in carol.source())
            await asyncio.sleep(1.0)
            assert "# carol" not in dave.source() and "# carol" not in grace.source()

    asyncio.run(scenario())
    # Saved by the room: the collaborators' lines are in the file, the viewer's is not.
    async def saved() -> str:
        for _ in range(100):
            _, model = await asyncio.to_thread(team["bob"].call, "GET", "api/contents/shared.ipynb")
            text = "".join(model["content"]["cells"][0]["source"])
            if "# after" in text:
                return text
            await asyncio.sleep(0.3)
        raise AssertionError("the room did not save")

    text = asyncio.run(saved())
    assert "# dave" in text and "# grace" in text and "# carol" not in text


def test_viewer_cannot_save_through_the_rest_api_either(team: dict[str, Lab]) -> None:
    status, doc = team["carol"].call("PUT", "api/contents/shared.ipynb", NOTEBOOK)
    assert status == 403 and "collaborator role" in doc["message"]
