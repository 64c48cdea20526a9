"""The ``nomad:`` settings, the client's TLS/env behaviour, and the error mapping at the boundary."""

from __future__ import annotations

import json

import cerberus
import nomad.api.exceptions as nomad_exc
import pytest
import requests

from fetchml_agent.errors import (
    AlreadyExists,
    BackendError,
    BackendUnavailable,
    InvalidArgument,
    InvalidState,
    NotFound,
    PermissionDenied,
    Timeout,
)
from fetchml_agent.nomad.client import NomadClient
from fetchml_agent.nomad.errors import exec_close_error, map_nomad_errors
from fetchml_agent.nomad.schema import NOMAD_CONFIG_SCHEMA, NomadSettings
from fetchml_agent.runtimes.nomad import placement_cause


def test_defaults_and_verify_on() -> None:
    s = NomadSettings.from_config({"address": "https://nomad:4646/"})
    assert s.address == "https://nomad:4646"
    assert s.tls_verify is True and s.token is None
    assert s.namespace == "default" and s.datacenters == ("*",) and s.node_pool == "default"
    assert s.max.gpu == 8 and s.start_timeout == 120 and s.pull_timeout == 600
    assert s.allowed_host_volumes == () and s.workspace_volume is None


def test_schema_is_a_plain_cerberus_schema_for_the_agent_config() -> None:
    v = cerberus.Validator({"nomad": {"type": "dict", "schema": NOMAD_CONFIG_SCHEMA}})
    assert v.validate({"nomad": {"address": "http://127.0.0.1:4646", "max": {"gpu": 2}}})
    assert v.document["nomad"]["tls"]["verify"] is True


@pytest.mark.parametrize(
    "section, words",
    [
        ({}, "nomad.address: required field"),
        ({"address": "nomad:4646"}, "nomad.address"),
        ({"address": "http://n:4646", "max": {"cpu": -1}}, "nomad.max.cpu: min value is 0"),
        ({"address": "http://n:4646", "tls": {"verify": "yes"}}, "nomad.tls.verify: must be of boolean type"),
        ({"address": "http://n:4646", "cpu_mode": "shares"}, "nomad.cpu_mode: unallowed value shares"),
        ({"address": "http://n:4646", "job_prefix": "Bad_"}, "nomad.job_prefix"),
        (
            {"address": "http://n:4646", "gpu": {"constraints": [{"operator": "="}]}},
            "attribute: required field",
        ),
        ({"address": "http://n:4646", "unknown": 1}, "nomad.unknown: unknown field"),
    ],
)
def test_bad_settings_name_the_key(section: dict, words: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        NomadSettings.from_config(section)
    assert words in err.value.message


def test_client_verifies_tls_by_default_and_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOMAD_TOKEN", "from-the-environment")
    monkeypatch.setenv("NOMAD_ADDR", "http://elsewhere:4646")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    plain = NomadClient(NomadSettings.from_config({"address": "https://nomad:4646"}))
    assert (
        plain._job.verify is True and plain._job.token is None and plain._job.address == "https://nomad:4646"
    )
    assert plain._session.trust_env is False
    ca = NomadClient(
        NomadSettings.from_config(
            {
                "address": "https://nomad:4646",
                "token": "s3cret",
                "tls": {"ca": "/etc/fetchml/nomad-ca.pem", "cert": "/c.pem", "key": "/k.pem"},
            }
        )
    )
    assert ca._job.verify == "/etc/fetchml/nomad-ca.pem" and ca._job.cert == ("/c.pem", "/k.pem")
    assert ca._variable.namespace == "default" and ca._job.token == "s3cret"
    off = NomadClient(NomadSettings.from_config({"address": "https://nomad:4646", "tls": {"verify": False}}))
    assert off._job.verify is False


def _response(status: int, text: str) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = text.encode()
    resp.headers["Content-Type"] = "text/plain"
    return resp


@pytest.mark.parametrize(
    "exc, error, words",
    [
        (
            nomad_exc.URLNotAuthorizedNomadException(_response(403, "Permission denied")),
            PermissionDenied,
            "denied",
        ),
        (
            nomad_exc.URLNotAuthorizedNomadException(_response(403, "ACL token not found")),
            PermissionDenied,
            "does not know",
        ),
        (nomad_exc.URLNotFoundNomadException(_response(404, "job not found")), NotFound, "job x not found"),
        (
            nomad_exc.BadRequestNomadException(_response(400, "Invalid wait time")),
            InvalidArgument,
            "Invalid wait time",
        ),
        (nomad_exc.VariableConflict(_response(409, "{}")), AlreadyExists, "concurrently"),
        (
            nomad_exc.BaseNomadException(_response(500, "1 error occurred:\n\t* bad")),
            BackendError,
            "1 error occurred: * bad",
        ),
        (
            nomad_exc.BaseNomadException(_response(500, "No cluster leader")),
            BackendUnavailable,
            "No cluster leader",
        ),
        (nomad_exc.BaseNomadException(_response(503, "")), BackendUnavailable, "HTTP 503"),
        (
            nomad_exc.BaseNomadException(requests.ConnectionError("refused")),
            BackendUnavailable,
            "cannot reach Nomad at http://n:1",
        ),
        (nomad_exc.BaseNomadException(requests.exceptions.SSLError("bad cert")), BackendUnavailable, "TLS"),
        (nomad_exc.BaseNomadException(requests.ReadTimeout("slow")), Timeout, "did not answer in time"),
        (nomad_exc.TimeoutNomadException("slow"), Timeout, "did not answer in time"),
        (requests.ConnectionError("raw"), BackendUnavailable, "cannot reach"),
        (json.JSONDecodeError("Expecting value", "<html>", 0), BackendError, "not JSON"),
    ],
)
def test_map_nomad_errors(exc: BaseException, error: type, words: str) -> None:
    with pytest.raises(error) as err:
        with map_nomad_errors("read job x", "http://n:1", "job x"):
            raise exc
    assert words in str(err.value)
    assert err.value.__cause__ is exc


def test_project_errors_pass_through_and_codes_are_distinct() -> None:
    with pytest.raises(NotFound):
        with map_nomad_errors("x"):
            raise NotFound("already mapped")
    codes = {cls.code for cls in (BackendUnavailable, PermissionDenied, InvalidArgument, NotFound, Timeout)}
    assert len(codes) == 5


@pytest.mark.parametrize(
    "reason, error",
    [
        ("Permission denied", PermissionDenied),
        ('task "jupyter" not started yet.', InvalidState),
        ('unknown task name "x"', NotFound),
        ("alloc not found", NotFound),
        ("rpc error: OCI runtime exec failed", BackendError),
    ],
)
def test_exec_close_frames(reason: str, error: type) -> None:
    assert isinstance(exec_close_error(1008, reason, "a1", "jupyter"), error)


def test_placement_cause_reads_nomads_metrics() -> None:
    failed = {
        "jupyter": {
            "NodesEvaluated": 3,
            "ConstraintFiltered": {"missing devices": 2},
            "DimensionExhausted": {"devices: no devices match request": 1},
        }
    }
    text = placement_cause(failed)
    assert "no node has a GPU matching the request (nvidia/gpu) (2 of 3 nodes)" in text
    assert "no node with a free GPU (1 of 3 nodes)" in text
    assert "not enough free memory" in placement_cause(
        {"g": {"NodesEvaluated": 1, "DimensionExhausted": {"memory": 1}}}
    )
    assert "port conflict" in placement_cause(
        {"g": {"NodesEvaluated": 1, "DimensionExhausted": {"network: reserved port collision http=8888": 1}}}
    )
    assert "no client node is ready" in placement_cause({"g": {"NodesEvaluated": 0, "NodesAvailable": {}}})
    assert "host volume" in placement_cause(
        {"g": {"NodesEvaluated": 1, "ConstraintFiltered": {"missing compatible host volumes": 1}}}
    )
