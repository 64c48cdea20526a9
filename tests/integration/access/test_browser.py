"""A person opens a workspace in a real browser: headless Chromium through the login flow.

Chromium (Debian's ``chromium``; .ci/run installs it) is driven over its DevTools protocol
(:mod:`.browser`). dave, a collaborator, opens the workspace's login page, types his user name and
API key, and lands on the notebook he asked for: JupyterLab renders it (the markdown heading and
the stored output), the page knows him by the name the agent gave, and nothing on the page
reported an error. bob opens his personal URL the same way. Screenshots go to the test's output
folder (pytest's ``tmp_path``; the path is printed).
"""

from __future__ import annotations

import json
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

RENDERED = """(() => {
  const h = document.querySelector('.jp-NotebookPanel .jp-MarkdownOutput h1');
  const out = document.querySelector('.jp-NotebookPanel .jp-OutputArea-output');
  return !!(h && h.textContent.includes('Weekly results') && out && out.textContent.includes('4242424242'));
})()"""
ME = "fetch('/api/me').then(r => r.json()).then(d => JSON.stringify(d.identity))"

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian package 'chromium'; .ci/run installs it)")


@pytest.fixture(scope="module")
def notebook(world: World) -> World:
    assert world.lab("owner").call("PUT", "api/contents/results.ipynb", NOTEBOOK)[0] in (200, 201)
    return world


@needs_chromium
def test_login_page_then_the_notebook_renders(notebook: World, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    with launch(CHROMIUM, tmp_path) as browser:
        page = browser.new_page()
        nxt = urllib.parse.quote("/lab/tree/results.ipynb")
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
        browser.pump(2)  # what the page does right after rendering (polls, the kernel list) counts too
        assert page.errors() == [], "\n".join(page.errors())


@needs_chromium
def test_personal_url_opens_the_owners_lab(notebook: World, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    base, token = base_and_token(notebook.urls["owner"])
    with launch(CHROMIUM, tmp_path) as browser:
        page = browser.new_page()
        page.goto(f"{base}lab/tree/results.ipynb?token={token}")
        page.wait_for(RENDERED, 120, "the rendered notebook")
        shot = page.screenshot(tmp_path / "notebook-bob.png")
        print(f"screenshot: {shot}")
        assert json.loads(page.evaluate(ME))["role"] == "owner"
        browser.pump(2)
        assert page.errors() == [], "\n".join(page.errors())
