"""The index's HTTP contract, through a real uvicorn: negotiation, refusals, files, cache, failures."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest

from fetchml_agent.policy.index import IndexContext, make_index_app
from fetchml_agent.policy.schema import PackagePolicy
from fetchml_agent.policy.simple import HTML_V1, JSON_V1, parse_project_page
from tests.integration.index.indexworld import World
from tests.integration.index.localindex import ServerThread, free_port_url

PIP_ACCEPT = f"{JSON_V1}, {HTML_V1}; q=0.1, text/html; q=0.01"


def get(world: World, path: str, **headers: str) -> httpx.Response:
    return httpx.get(f"{world.index.url}/index/{path}", headers=headers, timeout=30)


@pytest.mark.parametrize(("accept", "media"), [
    (PIP_ACCEPT, JSON_V1),
    (f"{HTML_V1}", HTML_V1),
    ("text/html", "text/html"),
    ("", "text/html"),
    ("*/*", "text/html"),
])
def test_project_page_negotiates_json_or_html(world: World, accept: str, media: str) -> None:
    r = get(world, "ws/simple/alpha/", accept=accept)
    assert r.status_code == 200 and r.headers["content-type"].startswith(media)
    page = parse_project_page(r.content, r.headers["content-type"], str(r.url), "alpha")
    assert sorted(f.filename for f in page.files) == ["alpha-1.0-py3-none-any.whl", "alpha-2.0-py3-none-any.whl"]
    for f in page.files:  # every file goes back through the agent, under the same key, with its hash
        assert f.url.startswith(f"{world.index.url}/index/ws/files/alpha/") and len(f.hashes["sha256"]) == 64
        assert f.core_metadata and f.requires_python == ">=3.8"


def test_unacceptable_media_type_is_406(world: World) -> None:
    assert get(world, "ws/simple/alpha/", accept="application/xml").status_code == 406


def test_names_are_normalized_by_redirect(world: World) -> None:
    r = httpx.get(f"{world.index.url}/index/ws/simple/Custom_Package/", follow_redirects=False)
    assert r.status_code == 301 and r.headers["location"] == "../custom-package/"
    r = httpx.get(f"{world.index.url}/index/ws/simple/alpha", follow_redirects=True)
    assert r.status_code == 200 and str(r.url).endswith("/index/ws/simple/alpha/")


def test_blocked_name_is_404_with_the_reason(world: World) -> None:
    r = get(world, "ws/simple/requests/", accept=PIP_ACCEPT)
    assert r.status_code == 404
    assert r.text.startswith("requests is blocked by the package policy (blocked_packages)")
    for name in ("os-system", "evil-pkg"):
        assert get(world, f"ws/simple/{name}/").status_code == 404
    # pip never prints an error body, so pip gets the reason where it prints it
    r = get(world, "ws/simple/requests/", **{"user-agent": "pip/23.2.1 {}"})
    assert r.status_code == 200 and 'fetchml-policy="requests is blocked' in r.headers["content-type"]


def test_approval_required_is_refused_until_approved(world: World) -> None:
    r = get(world, "ws/simple/tensorflow/")
    assert r.status_code == 404 and "tensorflow needs an approved request: ml jupyter request ws tensorflow" in r.text
    assert get(world, "open/simple/tensorflow/").status_code == 200
    # approved for >=1.0,<2: only those versions are listed
    page = get(world, "ws/simple/custom-package/", accept=JSON_V1).json()
    assert [f["filename"] for f in page["files"]] == [
        "custom_package-1.0-py3-none-any.whl", "custom_package-1.5-py3-none-any.whl"]


def test_unknown_key_and_unknown_project(world: World) -> None:
    r = get(world, "nope/simple/alpha/")
    assert r.status_code == 404 and "no package index for key 'nope'" in r.text
    r = get(world, "ws/simple/does-not-exist/")
    assert r.status_code == 404 and "not on the upstream package index" in r.text
    assert get(world, "ws/simple/bad%20name/").status_code == 404


def test_root_lists_only_what_the_workspace_may_install(world: World) -> None:
    names = {p["name"] for p in get(world, "ws/simple/", accept=JSON_V1).json()["projects"]}
    assert {"alpha", "beta", "gamma", "custom-package", "pytorch"} <= names
    assert not names & {"requests", "tensorflow", "evil-pkg", "os-system"}
    html = get(world, "open/simple/").text
    assert '<a href="tensorflow/">tensorflow</a>' in html and "requests/" not in html


def _file_url(world: World, key: str, project: str) -> str:
    page = get(world, f"{key}/simple/{project}/", accept=JSON_V1)
    return str(page.url.join(page.json()["files"][0]["url"]))


def test_files_are_streamed_once_then_served_from_the_cache(world: World) -> None:
    url = _file_url(world, "open", "six")
    hits = world.upstream_app.state.hits
    first = httpx.get(url)
    n = sum(v for k, v in hits.items() if k.startswith("/files/six-"))
    second = httpx.get(url)
    assert first.status_code == second.status_code == 200 and first.content == second.content
    assert first.content[:2] == b"PK"
    assert sum(v for k, v in hits.items() if k.startswith("/files/six-")) == n  # no second upstream fetch
    meta = httpx.get(url + ".metadata")
    assert meta.status_code == 200 and b"Name: six" in meta.content


def test_file_links_cannot_be_forged_or_reused_for_blocked_names(world: World) -> None:
    url = _file_url(world, "open", "alpha")
    assert httpx.get(url.replace("/files/alpha/", "/files/beta/")).status_code == 404  # signed per project
    token = url.split("/")[-2]
    forged = url.replace(token, token[:-1] + ("0" if token[-1] != "0" else "1"))
    assert httpx.get(forged).status_code == 404
    assert httpx.get(url.rsplit("/", 1)[0] + "/other-1.0-py3-none-any.whl").status_code == 404
    # links are checked against the policy of the workspace that asks, not the one that got them
    inside = httpx.get(_file_url(world, "open", "custom-package").replace("/index/open/", "/index/ws/"))
    assert inside.status_code == 200  # custom-package 1.0 is inside ws's approved range
    blocked = httpx.get(_file_url(world, "open", "tensorflow").replace("/index/open/", "/index/ws/"))
    assert blocked.status_code == 403 and "tensorflow needs an approved request" in blocked.text


def test_dry_run_serves_everything_and_reports_what_it_would_have_blocked(world: World) -> None:
    world.decisions.clear()
    assert get(world, "dry/simple/requests/").status_code == 200
    (workspace, decision), = [d for d in world.decisions if d[1].package == "requests"]
    assert workspace == "dry" and decision.decision == "allow" and decision.would_have == "deny"


def test_upstream_in_html_only(world: World) -> None:
    world.upstream_app.state.force_html = True
    world.service.clear_cache()
    try:
        page = get(world, "ws/simple/beta/", accept=JSON_V1)
        assert page.status_code == 200
        (entry,) = page.json()["files"]
        assert entry["filename"] == "beta-1.0-py3-none-any.whl" and "sha256" in entry["hashes"]
        assert httpx.get(str(page.url.join(entry["url"]))).status_code == 200
    finally:
        world.upstream_app.state.force_html = False


def test_upstream_down_is_502_with_a_message(tmp_path: Path) -> None:
    async def resolve(key: str) -> IndexContext | None:
        return IndexContext(PackagePolicy())

    upstream = free_port_url()
    with ServerThread(make_index_app(upstream=upstream, cache_dir=tmp_path, resolve=resolve)) as index:
        r = httpx.get(f"{index.url}/ws/simple/six/")
        assert r.status_code == 502
        assert r.text.startswith(f"the upstream package index {upstream} cannot be reached")
        assert "package_index.upstream" in r.text
        pip = httpx.get(f"{index.url}/ws/simple/six/", headers={"user-agent": "pip/23.2.1"})
        assert pip.status_code == 200 and "cannot be reached" in pip.headers["content-type"]
        assert httpx.get(f"{index.url}/ws/simple/").status_code == 502


def test_index_works_without_a_server_too(tmp_path: Path, wheelhouse: Path) -> None:
    """In-process through httpx's ASGI transport: the same app the agent mounts."""
    from tests.integration.index.localindex import make_upstream_app

    async def run() -> dict:
        upstream = httpx.ASGITransport(app=make_upstream_app(wheelhouse))

        async def resolve(key: str) -> IndexContext | None:
            return IndexContext(PackagePolicy()) if key == "k" else None

        app = make_index_app(upstream="http://upstream.test/simple/", cache_dir=tmp_path, resolve=resolve,
                             transport=upstream)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent.test") as c:
            r = await c.get("/k/simple/alpha/", headers={"accept": JSON_V1})
            await app.state.index.aclose()
            return r.json()

    body = asyncio.run(run())
    assert body["meta"] == {"api-version": "1.0"} and len(body["files"]) == 2
    assert all(re.match(r"^\.\./\.\./files/alpha/[^/]+/alpha-", f["url"]) for f in body["files"])
    assert json.dumps(body)


def test_a_file_url_upstream_directory(tmp_path: Path) -> None:
    """``package_index.upstream: file:///...``: a directory laid out as a simple index (offline mirrors)."""
    from fetchml_agent.policy.simple import DistFile, ProjectPage, render_project, render_root
    from tests.integration.index.localindex import build_wheel

    (tmp_path / "files").mkdir()
    wheel = build_wheel(tmp_path / "files", "six", "1.17.0")
    (tmp_path / "simple" / "six").mkdir(parents=True)
    (tmp_path / "simple" / "index.html").write_bytes(render_root(["six", "requests"], "text/html", lambda n: f"{n}/"))
    page = ProjectPage("six", (DistFile(wheel.name, f"../../files/{wheel.name}"),))
    (tmp_path / "simple" / "six" / "index.html").write_bytes(render_project(page, "text/html", lambda f: f.url))

    async def run() -> tuple[httpx.Response, httpx.Response, httpx.Response, httpx.Response]:
        async def resolve(key: str) -> IndexContext | None:
            return IndexContext(PackagePolicy())

        app = make_index_app(upstream=(tmp_path / "simple").as_uri() + "/", cache_dir=tmp_path / "cache",
                             resolve=resolve)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent.test") as c:
            root = await c.get("/k/simple/")
            project = await c.get("/k/simple/six/", headers={"accept": JSON_V1})
            file = await c.get(str(project.url.join(project.json()["files"][0]["url"])))
            missing = await c.get("/k/simple/absent/")
        await app.state.index.aclose()
        return root, project, file, missing

    root, project, file, missing = asyncio.run(run())
    assert '<a href="six/">six</a>' in root.text and "requests" not in root.text
    assert project.status_code == 200 and file.content == wheel.read_bytes()
    assert missing.status_code == 404


def test_an_http_upstream_cannot_make_the_index_read_local_files(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    secret = tmp_path / "secret-1.0-py3-none-any.whl"
    secret.write_bytes(b"agent-local data")

    async def page(request: object) -> HTMLResponse:
        return HTMLResponse(f'<a href="{secret.as_uri()}">{secret.name}</a>')

    async def resolve(key: str) -> IndexContext | None:
        return IndexContext(PackagePolicy())

    async def run() -> httpx.Response:
        hostile = httpx.ASGITransport(app=Starlette(routes=[Route("/simple/secret/", page)]))
        app = make_index_app(upstream="http://hostile.test/simple/", cache_dir=tmp_path / "c", resolve=resolve,
                             transport=hostile)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent.test") as c:
            listing = await c.get("/k/simple/secret/", headers={"accept": JSON_V1})
            r = await c.get(str(listing.url.join(listing.json()["files"][0]["url"])))
        await app.state.index.aclose()
        return r

    r = asyncio.run(run())
    assert r.status_code == 403 and b"agent-local" not in r.content
