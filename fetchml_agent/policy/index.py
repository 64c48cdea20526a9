"""The filtering package index: a Starlette app in front of an upstream simple index.

Mount it in the agent (``Mount("/index", app=make_index_app(...))``); a workspace's pip, uv and
``!pip install`` use ``http://AGENT/index/{key}/simple/``, where ``key`` is the workspace's index
key and ``resolve(key)`` returns its :class:`IndexContext` (effective policy and approved
requests), or ``None`` for 404.

Routes (below the mount point):

``GET /{key}/simple/``
    the upstream's project list, less the names this workspace may not install.
``GET /{key}/simple/{project}/``
    the upstream's project page (PEP 503 HTML or PEP 691 JSON, negotiated on ``Accept``), with
    every file URL pointing back through this app. Blocked names, and approval-required names
    without an approved request, answer 404 with the policy's reason as the body. Versions with
    a blocking known vulnerability are listed as yanked, the advisory as the reason: pip skips
    them unless a ``==`` pin names one, prints the reason, and then gets 403 for the file. pip never shows
    an error body, so for a ``pip/`` User-Agent the refusal is a 200 whose Content-Type carries
    the reason: pip prints it ("Skipping page ... because the GET request got Content-Type: ...
    fetchml-policy=...") and then finds no version. Names approved for a version range list
    only the files in that range. In dry-run mode everything is served and the would-be
    refusals go to ``on_decision``.
``GET /{key}/files/{project}/{token}/{filename}``
    the file (or its ``.metadata``), streamed from the upstream and kept in ``cache_dir``; the
    token is signed, so only URLs this index wrote are fetched, and the policy is checked again.

An unreachable upstream answers 502 with a message naming it. The decisions are the engine's
own (:func:`~fetchml_agent.policy.engine.decide_name`), so the index and ``ml jupyter
check-package`` cannot disagree.

Call ``await app.state.index.aclose()`` when the agent stops (a mounted app gets no lifespan).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from fetchml_agent.errors import UpstreamUnavailable
from fetchml_agent.policy.engine import ALLOW, Approvals, Decision, decide_name, decide_version
from fetchml_agent.policy.names import is_valid_name, normalize_name
from fetchml_agent.policy.schema import PackagePolicy
from fetchml_agent.policy.simple import (
    UPSTREAM_ACCEPT,
    DistFile,
    ProjectPage,
    negotiate,
    parse_project_page,
    parse_root_page,
    render_project,
    render_root,
    version_of,
    with_files,
)

__all__ = [
    "IndexContext",
    "INDEX_VARIABLES_TO_UNSET",
    "IndexService",
    "WorkspaceIndexConfig",
    "default_upstream",
    "make_index_app",
    "upstream_ssl_context",
    "workspace_index_config",
]

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_SAFE_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]*\Z")


@dataclass(frozen=True)
class IndexContext:
    """What the index needs to know about one workspace: its effective policy and approvals."""

    policy: PackagePolicy
    approvals: Approvals = field(default_factory=Approvals)
    workspace: str | None = None


DecisionHook = Callable[[IndexContext, Decision], Awaitable[None]]


def _text(status: int, message: str, request: Request) -> Response:
    """A refusal or failure pip will show: see the module docstring."""
    if request.headers.get("user-agent", "").startswith("pip/") and "/simple/" in request.url.path:
        shown = message.replace('"', "'").encode("ascii", "replace").decode()
        return PlainTextResponse(message + "\n", status_code=200, headers={
            "content-type": f'text/plain; charset=utf-8; fetchml-policy="{shown}"', "cache-control": "no-store"})
    return PlainTextResponse(message + "\n", status_code=status, headers={"cache-control": "no-store"})


def _local_path(url: str) -> Path:
    """The file a ``file://`` URL names; a directory stands for its index.html (as pip reads it)."""
    path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
    return path / "index.html" if path.is_dir() else path


def _read_local(url: str) -> httpx.Response:
    path = _local_path(url)
    request = httpx.Request("GET", url)
    if not path.is_file():
        return httpx.Response(404, request=request)
    media = "text/html" if path.suffix == ".html" else "application/octet-stream"
    return httpx.Response(200, headers={"content-type": media}, content=path.read_bytes(), request=request)


def upstream_ssl_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """How an https upstream is verified: the system's trust store (OpenSSL's default paths, which
    honour ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``), as pip and curl do, so a TLS-intercepting
    proxy whose CA the host trusts works; plus ``ca_bundle`` (``package_index.ca_bundle``)."""
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


class IndexService:
    """The index's state: the upstream client, the page cache and the file cache."""

    def __init__(self, *, upstream: str, cache_dir: Path, resolve: Callable[[str], Awaitable[IndexContext | None]],
                 on_decision: DecisionHook | None = None, page_ttl: float = 60.0, timeout: float = 30.0,
                 proxy: str | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 secret: bytes | None = None, ca_bundle: str | None = None) -> None:
        self.upstream = upstream.rstrip("/") + "/"
        self.cache_dir = Path(cache_dir)
        self.resolve = resolve
        self.on_decision = on_decision
        self.page_ttl = page_ttl
        self._secret = secret or secrets.token_bytes(32)
        self._client_args: dict[str, object] = {"timeout": httpx.Timeout(timeout), "follow_redirects": True,
                                                "trust_env": False, "proxy": proxy, "transport": transport,
                                                "verify": upstream_ssl_context(ca_bundle)}
        self._client: httpx.AsyncClient | None = None
        self._pages: dict[str, tuple[float, ProjectPage | None]] = {}
        # rendered pages, per upstream page object: {id(page): (page, {(media, filenames): body})}
        self._rendered: dict[int, tuple[ProjectPage, dict[tuple[str, tuple[str, ...] | None], bytes]]] = {}
        self._root: tuple[float, list[str]] | None = None
        # (cache, result) -> lookups: page/file, hit/miss; read by the agent's /metrics (issue 17)
        self.cache_lookups: collections.Counter[tuple[str, str]] = collections.Counter()

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(**self._client_args)  # type: ignore[arg-type]
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def clear_cache(self) -> int:
        """Forgets cached pages and deletes cached files; returns the number of files removed."""
        self._pages.clear()
        self._rendered.clear()
        self._root = None
        removed = 0
        for path in (self.cache_dir / "files").glob("*/*"):
            path.unlink(missing_ok=True)
            removed += 1
        return removed

    # -- upstream -------------------------------------------------------------------------------

    def _unavailable(self, exc: Exception | str) -> UpstreamUnavailable:
        why = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
        return UpstreamUnavailable(
            f"the upstream package index {self.upstream} cannot be reached ({why}); nothing can be installed "
            "until it answers. Check package_index.upstream in the agent's config.")

    async def _get(self, url: str) -> httpx.Response:
        if url.startswith("file://"):
            return await asyncio.to_thread(_read_local, url)
        try:
            resp = await self.client.get(url, headers={"accept": UPSTREAM_ACCEPT})
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        if resp.status_code >= 500:
            raise self._unavailable(f"HTTP {resp.status_code} from {url}")
        return resp

    async def project(self, name: str) -> ProjectPage | None:
        """The upstream page of ``name`` (cached for ``page_ttl``), ``None`` when it has none."""
        hit = self._pages.get(name)
        if hit and time.monotonic() - hit[0] < self.page_ttl:
            self.cache_lookups["page", "hit"] += 1
            return hit[1]
        self.cache_lookups["page", "miss"] += 1
        url = urllib.parse.urljoin(self.upstream, f"{name}/")
        resp = await self._get(url)
        page: ProjectPage | None = None
        if resp.status_code == 200:
            page = parse_project_page(resp.content, resp.headers.get("content-type", ""), str(resp.url), name)
        elif resp.status_code != 404:
            raise self._unavailable(f"HTTP {resp.status_code} from {url}")
        old = self._pages.get(name)
        if old and old[1] is not None:
            self._rendered.pop(id(old[1]), None)
        self._pages[name] = (time.monotonic(), page)
        return page

    async def root(self) -> list[str]:
        if self._root and time.monotonic() - self._root[0] < self.page_ttl:
            return self._root[1]
        resp = await self._get(self.upstream)
        if resp.status_code != 200:
            raise self._unavailable(f"HTTP {resp.status_code} from {self.upstream}")
        names = parse_root_page(resp.content, resp.headers.get("content-type", ""))
        self._root = (time.monotonic(), names)
        return names

    # -- file tokens ----------------------------------------------------------------------------

    def token(self, project: str, f: DistFile) -> str:
        payload = json.dumps([f.url, f.hashes.get("sha256")], separators=(",", ":")).encode()
        sig = hmac.new(self._secret, project.encode() + b"\0" + payload, hashlib.sha256).hexdigest()[:32]
        return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + sig

    def untoken(self, project: str, token: str) -> tuple[str, str | None] | None:
        body, _, sig = token.partition(".")
        try:
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            expected = hmac.new(self._secret, project.encode() + b"\0" + payload, hashlib.sha256).hexdigest()[:32]
            if not hmac.compare_digest(expected, sig):
                return None
            url, sha256 = json.loads(payload)
        except (ValueError, TypeError):
            return None
        return str(url), sha256

    # -- decisions ------------------------------------------------------------------------------

    async def decide(self, ctx: IndexContext, name: str) -> Decision:
        decision = decide_name(name, ctx.policy, approved=ctx.approvals, workspace=ctx.workspace)
        if decision.would_have is not None or decision.decision != ALLOW:
            log.info("index %s: %s %s (%s): %s", ctx.workspace or "-", decision.would_have or decision.decision,
                     name, decision.rule, decision.reason)
        if self.on_decision is not None:
            await self.on_decision(ctx, decision)
        return decision

    def render(self, name: str, upstream_page: ProjectPage, visible: ProjectPage, media: str) -> bytes:
        """The page as served (file URLs relative, through ``files/``), rendered once per upstream page."""
        slot = self._rendered.get(id(upstream_page))
        if slot is None or slot[0] is not upstream_page:
            slot = (upstream_page, {})
            self._rendered[id(upstream_page)] = slot
        key = (media, None if visible is upstream_page else tuple(f"{f.filename}\0{f.yanked}" for f in visible.files))
        body = slot[1].get(key)
        if body is None:
            body = render_project(visible, media, lambda f: f"../../files/{name}/{self.token(name, f)}/"
                                                            f"{urllib.parse.quote(f.filename)}")
            slot[1][key] = body
        return body

    def visible_files(self, ctx: IndexContext, decision: Decision, page: ProjectPage) -> ProjectPage:
        """Files the workspace may fetch: all, or those in the approved version ranges."""
        if decision.rule != "approved_request" or ctx.approvals.covers_every_version(decision.package or ""):
            return page
        name = decision.package or page.name
        return with_files(page, (f for f in page.files
                                 if (v := version_of(f.filename)) and ctx.approvals.version_allowed(name, v)))

    async def mark_vulnerable(self, ctx: IndexContext, name: str, page: ProjectPage) -> ProjectPage:
        """Files of versions with a blocking advisory, yanked with it as the reason (PEP 592).

        When no version is left installable the refusal goes to ``on_decision`` (it names the advisory
        in the install's error).
        """
        if ctx.policy.vulnerabilities is None:
            return page
        marked: list[DistFile] = []
        refusals: dict[str, Decision] = {}
        for f in page.files:
            version = version_of(f.filename)
            d = decide_version(name, version, ctx.policy) if version else None
            if d is not None and d.decision != ALLOW:
                refusals.setdefault(version or "", d)
                marked.append(dataclasses.replace(f, yanked=d.reason))
            else:
                marked.append(f)
        if not refusals:
            return page
        if all(f.yanked for f in marked) and self.on_decision is not None:
            await self.on_decision(ctx, next(iter(refusals.values())))
        return ProjectPage(page.name, tuple(marked))

    # -- file cache -----------------------------------------------------------------------------

    def cache_path(self, url: str, filename: str) -> Path:
        digest = hashlib.sha256(url.encode()).hexdigest()
        return self.cache_dir / "files" / digest[:2] / f"{digest[2:20]}-{filename}"

    def fetchable(self, url: str) -> bool:
        """Only an upstream that is itself a local directory may link local files."""
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        return scheme in ("http", "https") or (scheme == "file" and self.upstream.startswith("file://"))

    async def stream_file(self, url: str, filename: str, sha256: str | None) -> Response:
        if not self.fetchable(url):
            return PlainTextResponse(f"{filename}: the upstream linked it with a URL this index does not fetch\n",
                                     status_code=403)
        if url.startswith("file://"):  # a local mirror is its own cache
            local = _local_path(url)
            if not local.is_file():
                return PlainTextResponse(f"{filename} is not on the upstream package index\n", status_code=404)
            return FileResponse(local, media_type="application/octet-stream")
        path = self.cache_path(url, filename)
        if path.is_file():
            self.cache_lookups["file", "hit"] += 1
            return FileResponse(path, media_type="application/octet-stream")
        self.cache_lookups["file", "miss"] += 1
        request = self.client.build_request("GET", url)
        try:
            upstream = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        if upstream.status_code != 200:
            await upstream.aclose()
            if upstream.status_code == 404:
                return PlainTextResponse(f"{filename} is not on the upstream package index\n", status_code=404)
            raise self._unavailable(f"HTTP {upstream.status_code} for {filename}")
        path.parent.mkdir(parents=True, exist_ok=True)
        headers = {"content-length": upstream.headers["content-length"]} if "content-length" in upstream.headers else {}
        return StreamingResponse(self._tee(upstream, path, sha256), headers=headers,
                                 media_type="application/octet-stream")

    async def _tee(self, upstream: httpx.Response, path: Path, sha256: str | None) -> AsyncIterator[bytes]:
        """Streams the upstream body to the client while writing it to the cache."""
        part = path.with_name(f"{path.name}.part-{secrets.token_hex(4)}")
        digest = hashlib.sha256()
        complete = False
        try:
            with part.open("wb") as out:
                async for chunk in upstream.aiter_bytes(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    yield chunk
            complete = True
        finally:
            await upstream.aclose()
            if complete and (sha256 is None or digest.hexdigest() == sha256):
                os.replace(part, path)
            else:
                if complete:
                    log.warning("index: %s did not match its sha256; not cached", path.name)
                part.unlink(missing_ok=True)


def make_index_app(*, upstream: str, cache_dir: Path, resolve: Callable[[str], Awaitable[IndexContext | None]],
                   on_decision: DecisionHook | None = None, page_ttl: float = 60.0, timeout: float = 30.0,
                   proxy: str | None = None, transport: httpx.AsyncBaseTransport | None = None,
                   ca_bundle: str | None = None) -> Starlette:
    """The filtering index as a Starlette app; see the module docstring for its routes.

    ``upstream``: the simple index to filter, http(s) or a ``file://`` directory (see
    :func:`default_upstream`); ``cache_dir``: where
    files are kept; ``resolve(key)``: the workspace's :class:`IndexContext`, or ``None``;
    ``on_decision(ctx, decision)``: awaited for every project decision (audit, dry-run log);
    ``page_ttl``: seconds a project page is reused; ``ca_bundle``: CA certificates an https
    upstream may be signed by besides the system's (:func:`upstream_ssl_context`). The service is
    ``app.state.index``.
    """
    service = IndexService(upstream=upstream, cache_dir=cache_dir, resolve=resolve, on_decision=on_decision,
                           page_ttl=page_ttl, timeout=timeout, proxy=proxy, transport=transport, ca_bundle=ca_bundle)

    async def context(request: Request) -> IndexContext | Response:
        key = request.path_params["key"]
        ctx = await service.resolve(key)
        if ctx is None:
            return PlainTextResponse(f"no package index for key {key!r}: the workspace does not exist or was "
                                     "deleted\n", status_code=404)
        return ctx

    async def root(request: Request) -> Response:
        ctx = await context(request)
        if isinstance(ctx, Response):
            return ctx
        media = negotiate(request.headers.get("accept"), request.query_params.get("format"))
        if media is None:
            return PlainTextResponse("only the simple API's JSON and HTML forms are served\n", status_code=406)
        try:
            names = await service.root()
        except UpstreamUnavailable as exc:
            return _text(502, exc.message, request)
        visible = [n for n in names if decide_name(n, ctx.policy, approved=ctx.approvals).decision == ALLOW]
        body = render_root(visible, media, lambda n: f"{normalize_name(n)}/")
        return Response(body, media_type=media)

    async def project(request: Request) -> Response:
        ctx = await context(request)
        if isinstance(ctx, Response):
            return ctx
        raw = request.path_params["project"]
        if not is_valid_name(raw):
            return PlainTextResponse(f"{raw!r} is not a valid project name\n", status_code=404)
        name = normalize_name(raw)
        if raw != name or not request.url.path.endswith("/"):
            return RedirectResponse(f"../{name}/" if request.url.path.endswith("/") else f"{name}/",
                                    status_code=301)
        media = negotiate(request.headers.get("accept"), request.query_params.get("format"))
        if media is None:
            return PlainTextResponse("only the simple API's JSON and HTML forms are served\n", status_code=406)
        decision = await service.decide(ctx, name)
        if decision.decision != ALLOW:
            return _text(404, decision.reason, request)
        try:
            page = await service.project(name)
        except UpstreamUnavailable as exc:
            return _text(502, exc.message, request)
        if page is None:
            return PlainTextResponse(f"{name} is not on the upstream package index\n", status_code=404)
        visible = await service.mark_vulnerable(ctx, name, service.visible_files(ctx, decision, page))
        body = service.render(name, page, visible, media)
        return Response(body, media_type=media, headers={"cache-control": "max-age=60"})

    async def files(request: Request) -> Response:
        ctx = await context(request)
        if isinstance(ctx, Response):
            return ctx
        name, token, filename = (request.path_params[k] for k in ("project", "token", "filename"))
        found = service.untoken(name, token)
        if found is None or not _SAFE_FILENAME.match(filename):
            return PlainTextResponse("this file link was not written by this index (or the agent restarted); "
                                     "fetch the project page again\n", status_code=404)
        url, sha256 = found
        metadata = filename.endswith(".metadata")
        base_name = filename.removesuffix(".metadata") if metadata else filename
        if urllib.parse.unquote(url.rsplit("/", 1)[-1]) != base_name:
            return PlainTextResponse("file name does not match its link\n", status_code=404)
        decision = await service.decide(ctx, name)
        if decision.decision != ALLOW:
            return PlainTextResponse(decision.reason + "\n", status_code=403)
        version = version_of(base_name)
        if decision.rule == "approved_request" and not ctx.approvals.covers_every_version(name) and not (
                version and ctx.approvals.version_allowed(name, version)):
            return PlainTextResponse(f"{base_name}: this version of {name} is outside its approved range\n",
                                     status_code=403)
        # Metadata is not code: pip reads it before it warns about the yanked (vulnerable) version.
        vulnerable = decide_version(name, version, ctx.policy) if version and not metadata else None
        if vulnerable is not None and vulnerable.decision != ALLOW:
            if service.on_decision is not None:
                await service.on_decision(ctx, vulnerable)
            return PlainTextResponse(vulnerable.reason + "\n", status_code=403)
        try:
            if metadata:
                return await service.stream_file(url + ".metadata", filename, None)
            return await service.stream_file(url, filename, sha256)
        except UpstreamUnavailable as exc:
            return PlainTextResponse(exc.message + "\n", status_code=502)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await service.aclose()

    app = Starlette(routes=[
        Route("/{key}/simple/", root, methods=["GET"]),
        Route("/{key}/simple/{project}/", project, methods=["GET"]),
        Route("/{key}/simple/{project}", project, methods=["GET"]),
        Route("/{key}/files/{project}/{token}/{filename}", files, methods=["GET"]),
    ], lifespan=lifespan)
    app.state.index = service
    return app


# -- what a workspace needs to use its index --------------------------------------------------------

#: Variables that would send pip or uv somewhere else; a workspace's environment must not have them.
INDEX_VARIABLES_TO_UNSET: tuple[str, ...] = (
    "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_INDEX", "PIP_TRUSTED_HOST",
    "UV_EXTRA_INDEX_URL", "UV_INDEX", "UV_FIND_LINKS", "UV_NO_INDEX", "UV_INSECURE_HOST",
    "CONDA_CHANNELS", "CONDA_CHANNEL_ALIAS",
)


@dataclass(frozen=True)
class WorkspaceIndexConfig:
    """How a workspace's environment is pointed at its index.

    Set ``env`` and remove ``unset`` from the workspace's environment; write ``pip_conf`` where
    ``env["PIP_CONFIG_FILE"]`` says (and/or as the environment's own ``pip.conf``) and
    ``condarc`` where ``env["CONDARC"]`` says.
    """

    index_url: str
    env: dict[str, str]
    unset: tuple[str, ...]
    pip_conf: str
    condarc: str


def _needs_trusted_host(index_url: str) -> str | None:
    parts = urllib.parse.urlsplit(index_url)
    if parts.scheme != "http" or not parts.hostname:
        return None
    try:
        if ipaddress.ip_address(parts.hostname).is_loopback:
            return None
    except ValueError:
        if parts.hostname == "localhost":
            return None
    return parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"


def workspace_index_config(index_url: str, policy: PackagePolicy, *, pip_conf_path: str | None = None,
                           condarc_path: str | None = None) -> WorkspaceIndexConfig:
    """The variables and files that make pip, uv and conda in a workspace use ``index_url``.

    ``index_url`` is the workspace's ``.../index/{key}/simple/`` as the workspace reaches the
    agent. pip trusts a plain-http index only on loopback, so other http hosts get
    ``trusted-host``. The ``.condarc`` lists only the trusted channels; conda itself does not go
    through the index, so it is advisory unless the network policy holds (docs/package-policy.md).
    """
    env = {"PIP_INDEX_URL": index_url, "UV_INDEX_URL": index_url, "UV_DEFAULT_INDEX": index_url,
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    trusted = _needs_trusted_host(index_url)
    if trusted:
        env["PIP_TRUSTED_HOST"] = trusted
    if pip_conf_path:
        env["PIP_CONFIG_FILE"] = pip_conf_path
    if condarc_path:
        env["CONDARC"] = condarc_path
    pip_conf = ["[global]", f"index-url = {index_url}", "extra-index-url =", "find-links =", "no-index = false"]
    if trusted:
        pip_conf.append(f"trusted-host = {trusted}")
    channels = "".join(f"  - {c}\n" for c in policy.trusted_channels)
    condarc = (f"channels: #!final\n{channels}allowlist_channels: #!final\n{channels}"
               "override_channels_enabled: false #!final\nchannel_priority: strict\nauto_update_conda: false\n")
    unset = tuple(v for v in INDEX_VARIABLES_TO_UNSET if v not in env)
    return WorkspaceIndexConfig(index_url, env, unset, "\n".join(pip_conf) + "\n", condarc)


def default_upstream(environ: Mapping[str, str]) -> str:
    """The upstream index when agent.yaml names none: this environment's own pip configuration.

    ``PIP_INDEX_URL`` in ``environ``, else ``index-url`` from pip's config files (``pip config
    list``, run with ``environ``), else pip's built-in default. Blocking: call it at start-up.
    """
    if environ.get("PIP_INDEX_URL", "").strip():
        return environ["PIP_INDEX_URL"].split()[0]
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], env=dict(environ),
                             capture_output=True, text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    found = dict(re.findall(r"^([\w:.-]+)\.index-url='([^']*)'$", out, flags=re.MULTILINE))
    for scope in (":env:", "install", "global"):
        if found.get(scope, "").strip():
            return found[scope].split()[0]
    from pip._internal.models.index import PyPI  # pip's own default, so no host is written here

    return str(PyPI.simple_url)
