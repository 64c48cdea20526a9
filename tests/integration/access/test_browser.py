"""A person opens a workspace in a real browser: headless Chromium through the login flow.

Chromium (Debian's ``chromium``; .ci/run installs it) is driven over its DevTools protocol
(:mod:`.browser`). dave, a collaborator, opens the workspace's login page, types his user name and
API key, and lands on the notebook he asked for: JupyterLab renders it (the markdown heading and
the stored output), the page knows him by the name the agent gave, and nothing on the page
reported an error; he runs the code cell and the audit says so. bob opens his personal URL. Screenshots go to the test's output
folder (pytest's ``tmp_path``; the path is printed).
"""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.conftest import KEYS

from .browser import chromium_path, launch
from .conftest import World
from .lab import base_and_token

pytestmark = pytest.mark.slow

CHROMIUM = chromium_path()
NOTEBOOK = {"type": "notebook", "format": "json", "content": {
    "cells": [
        {"cell_type": "markdown", "id": "m1", "source": "# Weekly results", "metadata": {}},
        {"cell_type": "code", "id": "c1", "source": "6 * 7", "metadata": {}, "execution_count": 1,
         "outputs": [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                      "data": {"text/plain": "4242424242"}}]},
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4, "nbformat_minor": 5}}

# The notebook in view (JupyterLab may restore other tabs, hidden, from the server's layout).
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
RENDERED = """(() => {
  const h = document.querySelector('PANEL .jp-MarkdownOutput h1');
  const out = document.querySelector('PANEL .jp-OutputArea-output');
  return !!(h && h.textContent.includes('Weekly results') && out && out.textContent.includes('4242424242'));
})()""".replace("PANEL", PANEL)
ME = "fetch('/api/me').then(r => r.json()).then(d => JSON.stringify(d.identity))"

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian package 'chromium'; .ci/run installs it)")


@pytest.fixture(scope="module")
def notebook(world: World) -> World:
    for name in ("results.ipynb", "report.ipynb"):  # one per test: dave's run changes his
        assert world.lab("owner").call("PUT", f"api/contents/{name}", NOTEBOOK)[0] in (200, 201)
    return world


@needs_chromium
def test_login_page_then_the_notebook_renders(notebook: World, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    with launch(CHROMIUM, tmp_path) as browser:
        page = browser.new_page()
        page.failure_shot = tmp_path / "failed.png"
        # ?reset: a layout of JupyterLab's own (it keeps one per server) restores no other tabs.
        nxt = urllib.parse.quote("/lab/tree/results.ipynb?reset")
        page.goto(f"{notebook.base}login?next={nxt}")
        page.wait_for("document.querySelector('#username') !== null", 30, "the login form")
        page.evaluate(f"""(() => {{
            document.querySelector('#username').value = 'dave';
            document.querySelector('#password').value = {json.dumps(KEYS['dave'])};
            document.querySelector('form').submit();
            return true; }})()""")
        page.wait_for(RENDERED, 120, "the rendered notebook")
        shot = page.screenshot(tmp_path / "notebook-dave.png")
        print(f"screenshot: {shot}")
        me = json.loads(page.evaluate(ME))
        assert (me["username"], me["display_name"], me["role"]) == ("dave", "Dave Collab", "collaborator")
        assert "/lab/tree/results.ipynb" in page.url() and "token=" not in page.url()
        # He runs the code cell as anyone would (click it, Shift+Enter): JupyterLab's own kernel
        # client (the v1 WebSocket protocol), and the audit says who ran which notebook.
        page.wait_for("document.body.innerText.includes('| Idle')", 120, "the notebook's kernel, idle")
        page.click(f"{PANEL} .jp-CodeCell .jp-InputArea-editor")
        page.wait_for(f"document.querySelector('{PANEL} .jp-CodeCell.jp-mod-active') !== null", 30,
                      "the code cell, active")
        page.press("Enter", 13, shift=True)
        page.wait_for(f"""[...document.querySelectorAll('{PANEL} .jp-CodeCell .jp-OutputArea-output')]
                         .some(o => o.textContent.trim() === '42')""", 120, "the cell's new output")
        page.screenshot(tmp_path / "notebook-dave-ran.png")
        deadline = time.monotonic() + 20
        while not [e for e in notebook.agent.ml_json("jupyter", "audit", notebook.workspace, user="bob")["events"]
                   if e["user"] == "dave" and e["action"] == "jupyter.execute"
                   and e["details"]["path"].endswith("results.ipynb") and e["details"]["status"] == "ok"]:
            assert time.monotonic() < deadline, "the browser's execution is not in the audit"
            time.sleep(0.5)
        browser.pump(2)  # what the page does right after rendering (polls, the kernel list) counts too
        assert page.errors() == [], "\n".join(page.errors())


@needs_chromium
def test_personal_url_opens_the_owners_lab(notebook: World, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    base, token = base_and_token(notebook.urls["owner"])
    with launch(CHROMIUM, tmp_path) as browser:
        page = browser.new_page()
        page.failure_shot = tmp_path / "failed.png"
        page.goto(f"{base}lab/tree/report.ipynb?reset&token={token}")
        page.wait_for(RENDERED, 120, "the rendered notebook")
        shot = page.screenshot(tmp_path / "notebook-bob.png")
        print(f"screenshot: {shot}")
        assert json.loads(page.evaluate(ME))["role"] == "owner"
        browser.pump(2)
        assert page.errors() == [], "\n".join(page.errors())
