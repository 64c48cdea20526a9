"""wss:// and https:// with the agent's own certificate, verified by `ml --ca`."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import AgentProcess, free_port


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fetchml-test-agent")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


def test_wss_with_ca_and_without(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    agent = AgentProcess(tmp_path / "agent", free_port(), {"tls": {"cert": str(cert), "key": str(key)}})
    try:
        agent.start()
        wss = f"wss://127.0.0.1:{agent.port}/ws"
        ok = agent.ml("jupyter", "list", "--json", "--server", wss, "--ca", str(cert))
        assert '"services"' in ok.stdout
        bad = agent.ml("jupyter", "list", "--server", wss, check=False)
        assert bad.returncode == 7 and "CERTIFICATE_VERIFY_FAILED" in bad.stderr.upper().replace(" ", "_")
        assert "--ca" in bad.stderr and "make dev-up" not in bad.stderr  # the fix is the CA, not starting an agent
        plain = agent.ml("jupyter", "list", "--server", f"ws://127.0.0.1:{agent.port}/ws", check=False)
        assert plain.returncode == 7
    finally:
        agent.stop()
