"""Package-policy benchmarks: decisions for a 500-line requirements list, index page latency.

Run: ``PYTHONPATH=. python3 benchmarks/bench_policy.py``. Prints numbers and ratios against the
issue's targets (whole list <= 25 ms; index page <= 1.2x the upstream once cached); asserts nothing.
Everything runs on 127.0.0.1: a local upstream of tiny wheels and the index under real uvicorns.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "index"))

from localindex import ServerThread, build_wheel, make_upstream_app  # noqa: E402

from fetchml_agent.policy import specs  # noqa: E402
from fetchml_agent.policy.engine import Approvals, check_requirements  # noqa: E402
from fetchml_agent.policy.index import IndexContext, make_index_app  # noqa: E402
from fetchml_agent.policy.model import PackagePolicy  # noqa: E402

LIST_TARGET_MS = 25.0
PAGE_TARGET_RATIO = 1.2


def requirements_500() -> str:
    forms = [
        "package-{i}=={i}.0.1", "Package_{i}>=1.{i},<3", "pkg.{i}[extra-a,extra-b]~=2.{i}",
        'pkg-{i}; python_version >= "3.8"', "pkg-{i} @ https://host.invalid/pkg_{i}-1.0-py3-none-any.whl",
        "requests=={i}.0", "tensorflow>=2.{i}", "pkg-{i}==1.0 --hash=sha256:{i:064d}",
        "# comment {i}", "pkg-{i}!=0.{i}",
    ]
    return "\n".join(forms[i % len(forms)].format(i=i) for i in range(500)) + "\n"


def bench_requirements() -> None:
    text = requirements_500()
    policy = PackagePolicy(approval_required=frozenset({"tensorflow"}), allowlist=None)
    approvals = Approvals([("tensorflow", ">=2.5")])
    runs = []
    for _ in range(20):
        specs._parse_cached.cache_clear()
        t0 = time.perf_counter()
        lines = check_requirements(text, policy, approved=approvals)
        runs.append((time.perf_counter() - t0) * 1000)
    warm = []
    for _ in range(20):
        t0 = time.perf_counter()
        check_requirements(text, policy, approved=approvals)
        warm.append((time.perf_counter() - t0) * 1000)
    cold = statistics.median(runs)
    print(f"requirements list: {len(lines)} decisions from 500 lines")
    print(f"  cold parse cache: median {cold:.2f} ms  ({len(lines) / cold * 1000:,.0f} decisions/s)  "
          f"ratio to the {LIST_TARGET_MS:.0f} ms target: {cold / LIST_TARGET_MS:.2f}")
    print(f"  warm parse cache: median {statistics.median(warm):.2f} ms")


def _median_get(client: httpx.Client, url: str, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(url, headers={"accept": "application/vnd.pypi.simple.v1+json"})
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.text
    return statistics.median(times)


def bench_index(n: int = 300) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        house = Path(tmp) / "wheels"
        house.mkdir()
        for v in range(30):
            build_wheel(house, "sample", f"1.{v}")

        async def resolve(key: str) -> IndexContext | None:
            return IndexContext(PackagePolicy())

        with ServerThread(make_upstream_app(house)) as upstream:
            index_app = make_index_app(upstream=f"{upstream.url}/simple/", cache_dir=Path(tmp) / "cache",
                                       resolve=resolve, page_ttl=3600)
            with ServerThread(index_app) as index, httpx.Client() as client:
                direct_url = f"{upstream.url}/simple/sample/"
                index_url = f"{index.url}/k/simple/sample/"
                _median_get(client, direct_url, 20)
                _median_get(client, index_url, 20)  # fills the page cache
                direct = _median_get(client, direct_url, n)
                through = _median_get(client, index_url, n)
                page = client.get(index_url, headers={"accept": "application/vnd.pypi.simple.v1+json"}).json()
                file_url = str(httpx.URL(index_url).join(page["files"][0]["url"]))
                client.get(file_url)  # fills the file cache
                up_file = f"{upstream.url}/files/{page['files'][0]['filename']}"
                file_direct = statistics.median(_time_get(client, up_file) for _ in range(n))
                file_through = statistics.median(_time_get(client, file_url) for _ in range(n))
            asyncio.run(index_app.state.index.aclose())
    print(f"index project page (30 files, JSON), median of {n}:")
    print(f"  upstream {direct:.2f} ms, through the index (cached) {through:.2f} ms, ratio {through / direct:.2f} "
          f"(target <= {PAGE_TARGET_RATIO})")
    print(f"  wheel file: upstream {file_direct:.2f} ms, through the index (cached) {file_through:.2f} ms, "
          f"ratio {file_through / file_direct:.2f}")


def _time_get(client: httpx.Client, url: str) -> float:
    t0 = time.perf_counter()
    r = client.get(url)
    assert r.status_code == 200
    return (time.perf_counter() - t0) * 1000


if __name__ == "__main__":
    bench_requirements()
    bench_index()
