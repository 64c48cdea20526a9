"""Issue 3: decisions for a 500-line requirements list; index page and file latency vs the upstream.

``python -m benchmarks policy`` (or ``make bench-policy``). Targets from the issue: the whole list
in <= 25 ms; an index page <= 1.2x the upstream once cached. Everything runs on 127.0.0.1: a local
upstream of tiny wheels and the filtering index, each under a real uvicorn.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common import Row, median, time_many

TITLE = "package policy (issue 3)"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fetchml_agent.policy import specs  # noqa: E402
from fetchml_agent.policy.engine import Approvals, check_requirements  # noqa: E402
from fetchml_agent.policy.index import IndexContext, make_index_app  # noqa: E402
from fetchml_agent.policy.schema import PackagePolicy  # noqa: E402
from tests.integration.index.localindex import ServerThread, build_wheel, make_upstream_app  # noqa: E402

JSON = {"accept": "application/vnd.pypi.simple.v1+json"}


def requirements_500() -> str:
    """500 lines in every common form: pins, ranges, extras, markers, URLs, blocked, hashes, comments."""
    forms = [
        "package-{i}=={i}.0.1", "Package_{i}>=1.{i},<3", "pkg.{i}[extra-a,extra-b]~=2.{i}",
        'pkg-{i}; python_version >= "3.8"', "pkg-{i} @ https://host.invalid/pkg_{i}-1.0-py3-none-any.whl",
        "requests=={i}.0", "tensorflow>=2.{i}", "pkg-{i}==1.0 --hash=sha256:{i:064d}",
        "# comment {i}", "pkg-{i}!=0.{i}",
    ]
    return "\n".join(forms[i % len(forms)].format(i=i) for i in range(500)) + "\n"


def bench_requirements() -> list[Row]:
    text = requirements_500()
    policy = PackagePolicy(approval_required=frozenset({"tensorflow"}))
    approvals = Approvals([("tensorflow", ">=2.5")])

    def cold() -> None:
        specs._parse_cached.cache_clear()
        check_requirements(text, policy, approved=approvals)

    cold_runs = time_many(cold, 20)
    cold_ms = median(cold_runs) * 1000
    warm_ms = median(time_many(lambda: check_requirements(text, policy, approved=approvals), 20)) * 1000
    decisions = len(check_requirements(text, policy, approved=approvals))
    return [
        Row(f"500-line list, {decisions} decisions (cold parse cache)", cold_ms, "ms", "target", 25.0, "<= 25 ms"),
        Row("500-line list (cold), best of 20: the machine's load aside", min(cold_runs) * 1000, "ms", "target",
            25.0, "<= 25 ms"),
        Row("500-line list (warm parse cache)", warm_ms, "ms", "target", 25.0, "<= 25 ms"),
        Row("decisions per second (cold)", decisions / cold_ms * 1000, "/s"),
    ]


def _get_ms(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    r = client.get(url, headers=headers)
    elapsed = (time.perf_counter() - t) * 1000
    if r.status_code != 200:
        raise RuntimeError(f"{url}: HTTP {r.status_code}: {r.text[:200]}")
    return elapsed


def bench_index(n: int = 300) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        house = Path(tmp) / "wheels"
        house.mkdir()
        for v in range(30):
            build_wheel(house, "sample", f"1.{v}")

        async def resolve(key: str) -> IndexContext | None:
            return IndexContext(PackagePolicy())

        with ServerThread(make_upstream_app(house)) as upstream:
            app = make_index_app(upstream=f"{upstream.url}/simple/", cache_dir=Path(tmp) / "cache",
                                 resolve=resolve, page_ttl=3600)
            with ServerThread(app) as index, httpx.Client() as client:
                direct_page, index_page = f"{upstream.url}/simple/sample/", f"{index.url}/k/simple/sample/"
                files = client.get(index_page, headers=JSON).json()["files"]  # fills the page cache
                index_file = str(httpx.URL(index_page).join(files[0]["url"]))
                direct_file = f"{upstream.url}/files/{files[0]['filename']}"
                client.get(index_file)  # fills the file cache
                rows = []
                for label, direct, through, headers in (("project page, 30 files, JSON", direct_page, index_page, JSON),
                                                        ("wheel file", direct_file, index_file, None)):
                    for _ in range(20):
                        _get_ms(client, direct, headers), _get_ms(client, through, headers)
                    d = median([_get_ms(client, direct, headers) for _ in range(n)])
                    t = median([_get_ms(client, through, headers) for _ in range(n)])
                    rows.append(Row(f"{label} through the index (cached), p50", t, "ms", "upstream", d, "<= 1.2x"))
            asyncio.run(app.state.index.aclose())
    return rows


def main() -> list[Row]:
    return bench_requirements() + bench_index()


if __name__ == "__main__":
    from benchmarks.common import print_rows

    print_rows(TITLE, main())
