from __future__ import annotations

import pytest

from fetchml_agent.gpus import parse_nvidia_smi_csv
from fetchml_agent.units import format_size_mb, parse_cpu, parse_size_mb


@pytest.mark.parametrize(
    "raw, mb", [("8g", 8192), ("8G", 8192), ("8Gi", 8192), ("8GB", 8192), ("512m", 512), ("1.5g", 1536), (2048, 2048), ("1t", 1048576), ("100", 100)]
)
def test_sizes(raw: object, mb: int) -> None:
    assert parse_size_mb(raw) == mb  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", ["", "g", "-1g", "0", "8x", "eight", True])
def test_bad_sizes_name_the_option(raw: object) -> None:
    with pytest.raises(ValueError, match="--memory"):
        parse_size_mb(raw, "--memory")  # type: ignore[arg-type]


def test_format_size() -> None:
    assert format_size_mb(8192) == "8g" and format_size_mb(1536) == "1536m"


@pytest.mark.parametrize("raw, cpu", [("4", 4.0), (0.5, 0.5), ("2.5", 2.5)])
def test_cpu(raw: object, cpu: float) -> None:
    assert parse_cpu(raw) == cpu  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", ["0", "-2", "x", "nan", "inf", True])
def test_bad_cpu(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_cpu(raw)  # type: ignore[arg-type]


H100 = """index, uuid, name, memory.total [MiB], driver_version, pci.bus_id
0, GPU-1a2b3c4d-0000-1111-2222-333344445555, NVIDIA H100 80GB HBM3, 81559 MiB, 550.54.15, 00000000:18:00.0
1, GPU-1a2b3c4d-0000-1111-2222-333344445566, NVIDIA H100 80GB HBM3, 81559 MiB, 550.54.15, 00000000:2A:00.0
"""


def test_parse_with_header_and_units() -> None:
    gpus = parse_nvidia_smi_csv(H100)
    assert [g["index"] for g in gpus] == [0, 1]
    assert gpus[0]["memory_mib"] == 81559 and gpus[0]["name"] == "NVIDIA H100 80GB HBM3"


def test_parse_noheader_nounits_and_na() -> None:
    text = "0, GPU-x, Tesla T4, 15360, 535.104.05, 00000000:00:04.0\n1, GPU-y, GRID A100-4C, [N/A], 535.1, 00000000:00:05.0\n"
    gpus = parse_nvidia_smi_csv(text)
    assert gpus[0]["memory_mib"] == 15360 and gpus[1]["memory_mib"] is None


def test_parse_empty_and_bad() -> None:
    assert parse_nvidia_smi_csv("") == []
    with pytest.raises(ValueError):
        parse_nvidia_smi_csv("0, GPU-x, only-three\n")
