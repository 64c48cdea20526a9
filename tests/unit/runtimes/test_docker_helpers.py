"""Pure helpers of the docker runtime: allowed images, index URL rewriting, custom-image specs."""

from __future__ import annotations

import pytest

from fetchml_agent.errors import InvalidArgument
from fetchml_agent.runtimes import docker as rt
from fetchml_agent.runtimes.docker import images


@pytest.mark.parametrize(
    ("image", "allowed", "ok"),
    [
        ("fetchml/workspace:0.1.0", None, True),
        ("fetchml/workspace:0.1.0", ["fetchml/workspace"], True),
        ("fetchml/workspace:0.1.0", ["fetchml/workspace:0.2.0"], False),
        ("fetchml/workspace:0.1.0", ["fetchml/*"], True),
        ("jupyter/scipy-notebook", ["jupyter/scipy-notebook:*"], False),
        ("jupyter/scipy-notebook:latest", ["jupyter/scipy-notebook:*"], True),
        ("registry.local:5000/team/img:1", ["registry.local:5000/team/img"], True),
        ("evil/workspace:1", ["fetchml/workspace"], False),
        ("anything", [], False),
    ],
)
def test_image_allowed(image: str, allowed: list[str] | None, ok: bool) -> None:
    assert rt.image_allowed(image, allowed) is ok


def test_loopback_index_urls_are_pointed_at_the_host_address() -> None:
    env = {
        "PIP_INDEX_URL": "http://127.0.0.1:9101/index/ws/simple/",
        "UV_INDEX_URL": "http://localhost:9101/index/ws/simple/",
        "OTHER": "http://127.0.0.1:91010/x",
        "ELSEWHERE": "http://127.0.0.1:8888/",
    }
    out = rt.rewrite_loopback_urls(env, 9101, "172.17.0.1")
    assert out["PIP_INDEX_URL"] == "http://172.17.0.1:9101/index/ws/simple/"
    assert out["UV_INDEX_URL"] == "http://172.17.0.1:9101/index/ws/simple/"
    assert out["OTHER"] == env["OTHER"] and out["ELSEWHERE"] == env["ELSEWHERE"]
    assert rt.rewrite_loopback_urls({"X": "http://[::1]:80/"}, 80, "fd00::1")["X"] == "http://[fd00::1]:80/"


@pytest.mark.parametrize(
    "spec", ["numpy", "pandas==2.0.0", "scikit-learn>=1.3,<2", "rich[jupyter]; python_version>'3'"]
)
def test_plain_requirements_are_accepted(spec: str) -> None:
    assert images._plain_requirement(spec) == spec


@pytest.mark.parametrize(
    "spec",
    [
        "--index-url=http://x",
        "pkg @ https://example.invalid/p.whl",
        "numpy\nRUN rm -rf /",
        "a$(id)",
        "not a spec!",
        "",
    ],
)
def test_anything_else_is_refused(spec: str) -> None:
    with pytest.raises(InvalidArgument):
        images._plain_requirement(spec)


def test_custom_dockerfile_quotes_specs_and_adds_gpu_environment() -> None:
    text = images._custom_dockerfile("sha256:abc", ["numpy", "pandas>=2"], gpu_support=True)
    assert text.splitlines()[1] == "FROM sha256:abc"
    assert "pip install --no-cache-dir --disable-pip-version-check numpy 'pandas>=2'" in text
    assert "ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility" in text
    assert "NVIDIA" not in images._custom_dockerfile("sha256:abc", ["numpy"], gpu_support=False)


def test_from_config_reads_the_docker_section() -> None:
    from fetchml_agent.config import parse_config

    cfg = parse_config(
        {
            "runtime": "docker",
            "listen": "127.0.0.1:9200",
            "docker": {
                "allowed_images": ["fetchml/*"],
                "index": "172.17.0.1:9300",
                "allow": [{"addr": "192.0.2.0/24", "port": 443}],
            },
        }
    )
    runtime = rt.DockerRuntime.from_config(cfg)
    assert runtime.image == rt.DEFAULT_IMAGE and runtime.allowed_images == ["fetchml/*"]
    assert runtime.allowed_bases == ["fetchml/workspace"]
    assert runtime._index == ("172.17.0.1", 9300)
    assert rt.DockerRuntime.from_config(
        parse_config({"runtime": "docker", "listen": "127.0.0.1:9200"})
    )._index == (
        None,
        9200,
    )


def test_docker_section_errors_name_the_key() -> None:
    from fetchml_agent.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"docker\.allow"):
        parse_config({"runtime": "docker", "docker": {"allow": [{"addr": "10.0.0.0/8", "proto": "icmp"}]}})
