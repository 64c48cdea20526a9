"""An https upstream whose certificate a test CA signed, as behind a TLS-intercepting proxy: the
index trusts what the host trusts (``SSL_CERT_FILE``, the system store) and
``package_index.ca_bundle``, as pip and curl do, not only certifi's list."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fetchml_agent.config import parse_config
from fetchml_agent.errors import UpstreamUnavailable
from fetchml_agent.policy.index import IndexService
from fetchml_agent.settings import ConfigError
from tests.integration.index.localindex import ServerThread, make_upstream_app
from tests.integration.packages.world import agent_for, make_wheelhouse, site_packages


def _test_ca(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA (``ca.pem``) and a server certificate for 127.0.0.1 it signed: ``(ca, cert, key)``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fetchml test proxy CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``(simple index URL over https, the CA that signed its certificate)``."""
    tmp = tmp_path_factory.mktemp("tls-upstream")
    ca, cert, key = _test_ca(tmp)
    app = make_upstream_app(make_wheelhouse(tmp / "wheels"))
    with ServerThread(app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as server:
        yield f"{server.url}/simple/", ca


def _project(upstream: str, tmp: Path, **kwargs: str) -> object:
    async def go() -> object:
        async def resolve(key: str) -> None:
            return None

        service = IndexService(upstream=upstream, cache_dir=tmp, resolve=resolve, **kwargs)  # type: ignore[arg-type]
        try:
            return await service.project("alpha")
        finally:
            await service.aclose()

    return asyncio.run(go())


def test_the_index_trusts_the_hosts_store_and_says_why_it_does_not(
        tls_upstream: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    upstream, ca = tls_upstream
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(UpstreamUnavailable, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        _project(upstream, tmp_path)  # a CA the host does not trust: refused, saying why
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the host's store (as for pip and curl)
    assert _project(upstream, tmp_path) is not None
    monkeypatch.delenv("SSL_CERT_FILE")
    assert _project(upstream, tmp_path, ca_bundle=str(ca)) is not None  # package_index.ca_bundle


def test_a_bad_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    for name, phrase in (("missing.pem", "No such file"), ("junk.pem", "not a readable PEM file")):
        with pytest.raises(ConfigError, match=phrase) as info:
            parse_config({"package_index": {"ca_bundle": name}}, path=tmp_path / "agent.yaml")
        assert "package_index.ca_bundle" in info.value.message


def test_install_from_an_https_upstream_signed_by_a_ca_in_ca_bundle(
        tls_upstream: tuple[str, Path], tmp_path: Path) -> None:
    """The real ``ml`` installs through an agent whose upstream a private CA signed, with the
    default settings plus ``package_index.ca_bundle``."""
    upstream, ca = tls_upstream
    agent = agent_for(tmp_path / "agent", upstream, package_index={"upstream": upstream, "ca_bundle": str(ca)})
    with agent.running():
        name = f"tls-{random.randint(1000, 9999)}"
        agent.ml("jupyter", "create", name, user="bob")
        cp = agent.ml("jupyter", "install", name, "beta", user="bob")
        assert "installed beta 1.0, alpha 2.0" in cp.stdout
        assert {p.name.split("-")[0] for p in site_packages(agent, name).glob("*.dist-info")} >= {"alpha", "beta"}
