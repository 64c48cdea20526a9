"""A local package world for the index tests and the benchmark: tiny wheels, an upstream, servers.

``build_wheel`` writes a real (installable) wheel; ``make_upstream_app`` serves a directory of them
as a simple index (PEP 503 HTML or PEP 691 JSON, by ``Accept``, with PEP 658 metadata), counting
requests; ``ServerThread`` runs any ASGI app under a real uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
import zipfile
from collections import Counter
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from fetchml_agent.policy.names import dist_filename_parts, normalize_name
from fetchml_agent.policy.simple import JSON_V1, DistFile, ProjectPage, negotiate, render_project, render_root

__all__ = ["ServerThread", "build_wheel", "free_port_url", "make_upstream_app", "wheel_metadata"]


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


def wheel_metadata(name: str, version: str, requires: list[str]) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    return "\n".join(lines) + "\n"


def build_wheel(directory: Path, name: str, version: str, requires: list[str] = ()) -> Path:  # type: ignore[assignment]
    """A pure-Python wheel with one module ``<name>_mod`` that knows its version."""
    dist = name.replace("-", "_").replace(".", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}_mod/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{info}/METADATA": wheel_metadata(name, version, list(requires)).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: fetchml-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    record += f"{info}/RECORD,,\n"
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arc, data in files.items():
            zf.writestr(arc, data)
        zf.writestr(f"{info}/RECORD", record)
    (directory / (path.name + ".metadata")).write_text(wheel_metadata(name, version, list(requires)))
    return path


def make_upstream_app(wheelhouse: Path) -> Starlette:
    """A simple index over ``wheelhouse``; ``app.state.hits`` counts requests per path."""
    hits: Counter[str] = Counter()
    known: dict[str, list[DistFile]] = {}

    def files_of(project: str) -> list[DistFile]:
        if project in known:  # the wheelhouse is written before the upstream starts
            return known[project]
        out = []
        for whl in sorted(wheelhouse.glob("*.whl")):
            parts = dist_filename_parts(whl.name)
            if parts and parts[0] == project:
                sha = hashlib.sha256(whl.read_bytes()).hexdigest()
                meta = hashlib.sha256((wheelhouse / (whl.name + ".metadata")).read_bytes()).hexdigest()
                out.append(DistFile(whl.name, f"/files/{whl.name}", {"sha256": sha},
                                    requires_python=">=3.8", core_metadata={"sha256": meta}))
        known[project] = out
        return out

    async def root(request: Request) -> Response:
        hits[request.url.path] += 1
        media = negotiate(request.headers.get("accept")) or "text/html"
        names = sorted({p[0] for w in wheelhouse.glob("*.whl") if (p := dist_filename_parts(w.name))})
        return Response(render_root(names, media, lambda n: f"{n}/"), media_type=media)

    async def project(request: Request) -> Response:
        hits[request.url.path] += 1
        name = normalize_name(request.path_params["project"])
        files = files_of(name)
        if not files:
            return PlainTextResponse("not found", status_code=404)
        media = negotiate(request.headers.get("accept")) or "text/html"
        if request.app.state.force_html and media == JSON_V1:
            media = "text/html"
        # absolute file URLs in JSON, relative ones in HTML: the index must handle both
        base = str(request.base_url).rstrip("/")
        body = render_project(ProjectPage(name, tuple(files)), media,
                              lambda f: base + f.url if media == JSON_V1 else "../.." + f.url)
        return Response(body, media_type=media)

    async def file(request: Request) -> Response:
        hits[request.url.path] += 1
        path = wheelhouse / request.path_params["filename"]
        if not path.is_file():
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(path, media_type="application/octet-stream")

    app = Starlette(routes=[Route("/simple/", root), Route("/simple/{project}/", project),
                            Route("/files/{filename}", file)])
    app.state.hits = hits
    app.state.force_html = False
    return app


class ServerThread:
    """A real uvicorn serving ``app`` on 127.0.0.1 in a thread; ``url`` once started."""

    def __init__(self, app: object, **config: object) -> None:
        """``config``: more of uvicorn's settings (``ssl_certfile``/``ssl_keyfile``: https)."""
        # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections (it checks proto);
        # without it every keep-alive response waits ~40 ms on delayed ACKs.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"{'https' if config.get('ssl_certfile') else 'http'}://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **config))  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def free_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (for "upstream down")."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/simple/"
