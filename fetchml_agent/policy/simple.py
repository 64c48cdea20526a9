"""The simple repository API, sans I/O: parse an upstream page, render a filtered one.

PEP 503 (HTML) and PEP 691 (JSON) pages parse into one model, :class:`ProjectPage` with
:class:`DistFile` entries; the index filters the model and renders it back in whichever format
the client negotiated (:func:`negotiate`). Nothing here does I/O.
"""

from __future__ import annotations

import html
import json
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from typing import Any

from fetchml_agent.errors import UpstreamUnavailable
from fetchml_agent.policy.names import dist_filename_parts

__all__ = [
    "HTML",
    "HTML_V1",
    "JSON_V1",
    "UPSTREAM_ACCEPT",
    "DistFile",
    "ProjectPage",
    "negotiate",
    "parse_project_page",
    "parse_root_page",
    "render_project",
    "render_root",
    "version_of",
    "with_files",
]

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
HTML = "text/html"
#: What the index asks its upstream for: JSON first, as pip does.
UPSTREAM_ACCEPT = f"{JSON_V1}, {HTML_V1};q=0.2, {HTML};q=0.01"

_ALIASES = {
    "application/vnd.pypi.simple.latest+json": JSON_V1,
    "application/vnd.pypi.simple.latest+html": HTML_V1,
    JSON_V1: JSON_V1,
    HTML_V1: HTML_V1,
    HTML: HTML,
    "*/*": HTML,
    "text/*": HTML,
    "application/*": JSON_V1,
}


@dataclass(frozen=True)
class DistFile:
    """One file of a project page. ``url`` is absolute and has no fragment; hashes are separate.

    ``yanked`` is False or True or the reason text; ``core_metadata`` is False, True, or a
    hashes mapping (PEP 658/714).
    """

    filename: str
    url: str
    hashes: dict[str, str] = field(default_factory=dict)
    requires_python: str | None = None
    yanked: bool | str = False
    core_metadata: bool | dict[str, str] = False
    gpg_sig: bool | None = None


@dataclass(frozen=True)
class ProjectPage:
    name: str
    files: tuple[DistFile, ...]


def version_of(filename: str) -> str | None:
    """The version in a wheel or sdist file name, or ``None`` when it cannot be read."""
    parts = dist_filename_parts(filename)
    return parts[1] if parts else None


def negotiate(accept: str | None, format_param: str | None = None) -> str | None:
    """The response type for an Accept header (PEP 691), or ``None`` when nothing fits (406).

    No header means HTML; ``?format=`` (a media type) wins over the header.
    """
    if format_param:
        return _ALIASES.get(format_param.strip().lower())
    if not accept or not accept.strip():
        return HTML
    best: tuple[float, int, str] | None = None
    for position, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        chosen = _ALIASES.get(media.lower())
        if chosen is None or q <= 0:
            continue
        candidate = (q, -position, chosen)
        if best is None or candidate > best:
            best = candidate
    return best[2] if best else None


def _bool_or_hashes(value: str | None) -> bool | dict[str, str]:
    if value is None:
        return False
    if "=" in value:
        algo, _, digest = value.partition("=")
        return {algo: digest}
    return value.lower() != "false"


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
        elif tag == "a":
            self._open, self._text = dict(attrs), []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append((self._open, "".join(self._text).strip()))
            self._open = None


def _split_hash(url: str) -> tuple[str, dict[str, str]]:
    base, _, fragment = url.partition("#")
    hashes: dict[str, str] = {}
    for part in fragment.split("&"):
        algo, sep, digest = part.partition("=")
        if sep and algo in ("sha256", "sha384", "sha512", "sha224", "sha1", "md5"):
            hashes[algo] = digest
    return base, hashes


def _is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == JSON_V1


def parse_project_page(body: bytes, content_type: str, page_url: str, name: str) -> ProjectPage:
    """Parses an upstream project page (JSON or HTML) into absolute-URL :class:`DistFile` entries.

    Raises :class:`UpstreamUnavailable` when the upstream answered something that is not a
    simple-API page (so the caller reports a broken upstream, not an empty project).
    """
    if _is_json(content_type):
        try:
            doc = json.loads(body)
            entries = doc["files"]
            files = tuple(_json_file(e, page_url) for e in entries)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UpstreamUnavailable("the upstream package index sent a JSON page that is not PEP 691",
                                      details=f"{page_url}: {exc}") from exc
        return ProjectPage(str(doc.get("name", name)), files)
    parser = _Anchors()
    try:
        parser.feed(body.decode("utf-8", errors="replace"))
    except AssertionError as exc:  # HTMLParser's way of saying "malformed"
        raise UpstreamUnavailable("the upstream package index sent a page that is not HTML",
                                  details=page_url) from exc
    base = urllib.parse.urljoin(page_url, parser.base) if parser.base else page_url
    out: list[DistFile] = []
    for attrs, text in parser.anchors:
        href = attrs.get("href")
        if not href:
            continue
        url, hashes = _split_hash(urllib.parse.urljoin(base, href))
        filename = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]) or text
        yanked_attr = attrs.get("data-yanked")
        metadata = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        out.append(DistFile(
            filename=filename,
            url=url,
            hashes=hashes,
            requires_python=attrs.get("data-requires-python") or None,
            yanked=False if yanked_attr is None and "data-yanked" not in attrs else (yanked_attr or True),
            core_metadata=_bool_or_hashes(metadata) if "data-core-metadata" in attrs
            or "data-dist-info-metadata" in attrs else False,
            gpg_sig=None if "data-gpg-sig" not in attrs else attrs.get("data-gpg-sig") == "true",
        ))
    return ProjectPage(name, tuple(out))


def _json_file(e: dict[str, Any], page_url: str) -> DistFile:
    url, fragment_hashes = _split_hash(urllib.parse.urljoin(page_url, e["url"]))
    metadata = e.get("core-metadata", e.get("dist-info-metadata", False))
    return DistFile(
        filename=e["filename"],
        url=url,
        hashes=dict(e.get("hashes") or fragment_hashes),
        requires_python=e.get("requires-python") or None,
        yanked=e.get("yanked", False) or False,
        core_metadata=metadata if isinstance(metadata, (bool, dict)) else False,
        gpg_sig=e.get("gpg-sig"),
    )


def parse_root_page(body: bytes, content_type: str) -> list[str]:
    """The project names of an upstream root page (``/simple/``), JSON or HTML."""
    if _is_json(content_type):
        try:
            return [str(p["name"]) for p in json.loads(body)["projects"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamUnavailable("the upstream package index sent a root page that is not PEP 691") from exc
    parser = _Anchors()
    parser.feed(body.decode("utf-8", errors="replace"))
    return [text for _attrs, text in parser.anchors if text]


def render_project(page: ProjectPage, media_type: str, url_for: Callable[[DistFile], str]) -> bytes:
    """The page in ``media_type`` (JSON or HTML), each file's URL from ``url_for``."""
    if media_type == JSON_V1:
        files = []
        for f in page.files:
            entry: dict[str, Any] = {"filename": f.filename, "url": url_for(f), "hashes": f.hashes}
            if f.requires_python:
                entry["requires-python"] = f.requires_python
            if f.yanked:
                entry["yanked"] = f.yanked
            if f.core_metadata:
                entry["core-metadata"] = f.core_metadata
                entry["dist-info-metadata"] = f.core_metadata
            if f.gpg_sig is not None:
                entry["gpg-sig"] = f.gpg_sig
            files.append(entry)
        return json.dumps({"meta": {"api-version": "1.0"}, "name": page.name, "files": files}).encode()
    lines = ["<!DOCTYPE html>", "<html>", "<head>", '<meta name="pypi:repository-version" content="1.0">',
             f"<title>Links for {html.escape(page.name)}</title>", "</head>", "<body>",
             f"<h1>Links for {html.escape(page.name)}</h1>"]
    for f in page.files:
        href = url_for(f)
        if f.hashes:
            algo = "sha256" if "sha256" in f.hashes else sorted(f.hashes)[0]
            href += f"#{algo}={f.hashes[algo]}"
        attrs = [f'href="{html.escape(href)}"']
        if f.requires_python:
            attrs.append(f'data-requires-python="{html.escape(f.requires_python)}"')
        if f.yanked:
            reason = "" if f.yanked is True else str(f.yanked)
            attrs.append(f'data-yanked="{html.escape(reason)}"')
        if f.core_metadata:
            value = "true" if f.core_metadata is True else "&".join(
                f"{k}={v}" for k, v in f.core_metadata.items())  # type: ignore[union-attr]
            attrs.append(f'data-core-metadata="{html.escape(value)}"')
            attrs.append(f'data-dist-info-metadata="{html.escape(value)}"')
        if f.gpg_sig is not None:
            attrs.append(f'data-gpg-sig="{"true" if f.gpg_sig else "false"}"')
        lines.append(f"<a {' '.join(attrs)}>{html.escape(f.filename)}</a><br>")
    lines += ["</body>", "</html>", ""]
    return "\n".join(lines).encode()


def render_root(names: Iterable[str], media_type: str, href_for: Callable[[str], str]) -> bytes:
    """The root listing (``/simple/``) of ``names`` in ``media_type``."""
    names = list(names)
    if media_type == JSON_V1:
        return json.dumps({"meta": {"api-version": "1.0"}, "projects": [{"name": n} for n in names]}).encode()
    body = "\n".join(f'<a href="{html.escape(href_for(n))}">{html.escape(n)}</a><br>' for n in names)
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta name=\"pypi:repository-version\" content=\"1.0\">\n"
            f"<title>Simple index</title>\n</head>\n<body>\n{body}\n</body>\n</html>\n").encode()


def with_files(page: ProjectPage, files: Iterable[DistFile]) -> ProjectPage:
    return replace(page, files=tuple(files))
