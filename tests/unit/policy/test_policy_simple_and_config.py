"""Simple-API parsing/rendering, content negotiation, and what a workspace needs to use its index."""

from __future__ import annotations

import configparser
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from fetchml_agent.errors import UpstreamUnavailable
from fetchml_agent.policy.index import INDEX_VARIABLES_TO_UNSET, default_upstream, workspace_index_config
from fetchml_agent.policy.schema import PackagePolicy
from fetchml_agent.policy.simple import (
    HTML,
    HTML_V1,
    JSON_V1,
    DistFile,
    ProjectPage,
    negotiate,
    parse_project_page,
    parse_root_page,
    render_project,
    render_root,
)

PIP = f"{JSON_V1}, {HTML_V1}; q=0.1, text/html; q=0.01"


@pytest.mark.parametrize(("accept", "fmt", "expected"), [
    (PIP, None, JSON_V1),
    (None, None, HTML),
    ("", None, HTML),
    ("text/html", None, HTML),
    (f"{HTML_V1}", None, HTML_V1),
    (f"{JSON_V1};q=0.2, {HTML_V1};q=0.9", None, HTML_V1),
    ("application/vnd.pypi.simple.latest+json", None, JSON_V1),
    ("*/*", None, HTML),
    (f"{JSON_V1};q=0", None, None),
    ("application/xml", None, None),
    (f"{JSON_V1};q=oops, text/html", None, HTML),
    ("text/html", JSON_V1, JSON_V1),
    ("text/html", "nonsense", None),
])
def test_negotiate(accept: str | None, fmt: str | None, expected: str | None) -> None:
    assert negotiate(accept, fmt) == expected


HTML_PAGE = b"""<!DOCTYPE html><html><body>
<a href="../../files/a-1.0-py3-none-any.whl#sha256=aa" data-requires-python="&gt;=3.8"
   data-dist-info-metadata="sha256=bb">a-1.0-py3-none-any.whl</a>
<a href="https://files.invalid/a-0.9.tar.gz#md5=cc" data-yanked="">a-0.9.tar.gz</a>
<a href="a-0.8.tar.gz" data-yanked="broken build" data-gpg-sig="false">a-0.8.tar.gz</a>
<a>no href</a>
</body></html>"""


def test_parse_html_page_resolves_urls_and_attributes() -> None:
    page = parse_project_page(HTML_PAGE, "text/html", "http://up.invalid/simple/a/", "a")
    one, two, three = page.files
    assert one == DistFile("a-1.0-py3-none-any.whl", "http://up.invalid/files/a-1.0-py3-none-any.whl",
                           {"sha256": "aa"}, ">=3.8", False, {"sha256": "bb"}, None)
    assert two.url == "https://files.invalid/a-0.9.tar.gz" and two.hashes == {"md5": "cc"} and two.yanked is True
    assert three.url == "http://up.invalid/simple/a/a-0.8.tar.gz" and three.yanked == "broken build"
    assert three.gpg_sig is False


def test_render_roundtrip_html_and_json() -> None:
    page = parse_project_page(HTML_PAGE, "text/html", "http://up.invalid/simple/a/", "a")
    for media in (HTML, JSON_V1):
        body = render_project(page, media, lambda f: f"x/{f.filename}")
        back = parse_project_page(body, media, "http://agent.invalid/i/k/simple/a/", "a")
        assert [(f.filename, f.hashes, f.requires_python, f.yanked, f.core_metadata) for f in back.files] == [
            (f.filename, f.hashes, f.requires_python, f.yanked, f.core_metadata) for f in page.files]
        assert all(f.url.startswith("http://agent.invalid/i/k/simple/a/x/") for f in back.files)


def test_html_escaping_in_rendered_pages() -> None:
    evil = DistFile('a"><script>-1.0.tar.gz', "http://u/x", requires_python='<4,">', yanked='"<b>')
    body = render_project(ProjectPage("a<b", (evil,)), HTML, lambda f: 'q"uote').decode()
    assert "<script>" not in body and "<b>" not in body and 'q&quot;uote' in body


def test_bad_upstream_json_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamUnavailable, match="not PEP 691"):
        parse_project_page(b'{"files": [{"url": "x"}]}', JSON_V1, "http://u/", "a")
    with pytest.raises(UpstreamUnavailable):
        parse_root_page(b"[]", JSON_V1)


def test_root_pages() -> None:
    assert parse_root_page(render_root(["a", "b-c"], JSON_V1, str), JSON_V1) == ["a", "b-c"]
    assert parse_root_page(render_root(["a", "b-c"], HTML, lambda n: f"{n}/"), "text/html") == ["a", "b-c"]
    assert json.loads(render_root([], JSON_V1, str)) == {"meta": {"api-version": "1.0"}, "projects": []}


def test_workspace_config_on_loopback() -> None:
    url = "http://127.0.0.1:8765/index/k1/simple/"
    cfg = workspace_index_config(url, PackagePolicy(), pip_conf_path="/ws/.config/pip/pip.conf",
                                 condarc_path="/ws/.condarc")
    assert cfg.env == {"PIP_INDEX_URL": url, "UV_INDEX_URL": url, "UV_DEFAULT_INDEX": url,
                       "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_CONFIG_FILE": "/ws/.config/pip/pip.conf",
                       "CONDARC": "/ws/.condarc"}
    assert set(cfg.unset) == set(INDEX_VARIABLES_TO_UNSET)
    ini = configparser.ConfigParser()
    ini.read_string(cfg.pip_conf)
    assert dict(ini["global"]) == {"index-url": url, "extra-index-url": "", "find-links": "", "no-index": "false"}
    rc = yaml.safe_load(cfg.condarc)
    assert rc["channels"] == rc["allowlist_channels"] == ["conda-forge", "defaults", "pytorch", "nvidia"]
    assert rc["override_channels_enabled"] is False and "#!final" in cfg.condarc


def test_workspace_config_on_a_bridge_address_trusts_only_that_host() -> None:
    cfg = workspace_index_config("http://172.17.0.1:8765/index/k/simple/", PackagePolicy(trusted_channels=("a",)))
    assert cfg.env["PIP_TRUSTED_HOST"] == "172.17.0.1:8765" and "PIP_TRUSTED_HOST" not in cfg.unset
    assert "trusted-host = 172.17.0.1:8765" in cfg.pip_conf
    assert "PIP_CONFIG_FILE" not in cfg.env and yaml.safe_load(cfg.condarc)["channels"] == ["a"]
    assert "PIP_TRUSTED_HOST" not in workspace_index_config("https://agent.invalid/index/k/simple/",
                                                            PackagePolicy()).env


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return env | extra


def test_default_upstream_from_the_environment_and_pip_config(tmp_path: Path) -> None:
    assert default_upstream({"PIP_INDEX_URL": "http://mirror.invalid/simple/ http://x/"}) == \
        "http://mirror.invalid/simple/"
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = http://global.invalid/simple/\n[install]\nindex-url = "
                    "http://install.invalid/simple/\n")
    assert default_upstream(_clean_env(PIP_CONFIG_FILE=str(conf))) == "http://install.invalid/simple/"
    conf.write_text("[global]\nindex-url = http://global.invalid/simple/\n")
    assert default_upstream(_clean_env(PIP_CONFIG_FILE=str(conf))) == "http://global.invalid/simple/"


def test_default_upstream_falls_back_to_pips_own_default() -> None:
    from pip._internal.models.index import PyPI

    assert default_upstream(_clean_env(PIP_CONFIG_FILE=os.devnull, PATH=os.path.dirname(sys.executable))) == \
        PyPI.simple_url
