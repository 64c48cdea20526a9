from __future__ import annotations

import pytest

from fetchml_agent.config import ConfigError, parse_config
from fetchml_agent.errors import InvalidArgument
from fetchml_agent.experiments.config import parse_duration, validate_experiment_id, validate_run_config


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90.0), (1.5, 1.5), ("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0), ("1h30m", 5400.0), ("1h 30m 5s", 5405.0)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "", "5d", -1, 0, True, "m"])
def test_bad_durations_name_the_key(value: object) -> None:
    with pytest.raises(InvalidArgument, match=r"^timeout: "):
        parse_duration(value)


def test_run_config_is_validated_and_normalized() -> None:
    doc = validate_run_config({"notebook": "a.ipynb", "timeout": "2m", "retries": 3, "parameters": {"lr": 0.1},
                               "resources": {"gpu": 1}, "experiment": "exp-1", "kernel": "python3"})
    assert doc["timeout"] == 120.0 and doc["retries"] == 3 and doc["resources"] == {"gpu": 1}
    assert validate_run_config(None) == {}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"retries": 11}, "retries: max value is 10"),
        ({"retries": -1}, "retries: min value is 0"),
        ({"timeout": "later"}, "timeout: must be seconds or a duration"),
        ({"notebook": "a.ipynb", "script": "b.py"}, "must not be present"),
        ({"parameters": {"1bad": 1}}, "parameters"),
        ({"resources": {"gpu": -1}}, "resources.gpu: min value is 0"),
        ({"resources": {"cpu": 2}}, "resources.cpu: unknown field"),
        ({"colour": "blue"}, "colour: unknown field"),
        ({"experiment": "has space"}, "experiment: must be 1-128"),
        (["not", "a", "mapping"], "the top level must be a mapping"),
    ],
)
def test_run_config_errors_name_the_file_and_key(doc: object, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_run_config(doc, "experiment-config.yaml")
    assert info.value.message.startswith("experiment-config.yaml: ") and message in info.value.message


def test_experiment_ids() -> None:
    assert validate_experiment_id("exp-123") == "exp-123"
    for bad in ("", "-x", "a/b", "x" * 129, None):
        with pytest.raises(InvalidArgument):
            validate_experiment_id(bad)


def test_agent_section_defaults_and_errors() -> None:
    assert parse_config({}).section("experiments") == {
        "cpu_workers": 1, "default_timeout": None, "cancel_grace": 5, "snapshot_max_file_mb": 10, "warm_runner_idle_s": 600,
        "run_data_max_mb": 100,
    }
    assert parse_config({"experiments": {"cpu_workers": 4, "default_timeout": "1h"}}).section("experiments")["cpu_workers"] == 4
    with pytest.raises(ConfigError, match=r"experiments.cpu_workers: min value is 1"):
        parse_config({"experiments": {"cpu_workers": 0}})
    with pytest.raises(ConfigError, match=r"experiments.default_timeout"):
        parse_config({"experiments": {"default_timeout": "whenever"}})
