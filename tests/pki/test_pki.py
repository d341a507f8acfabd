"""plugins/common/pki.py: CA, certificates, CSRs and KubeEdge's join token."""

from __future__ import annotations

import ipaddress
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubeedge.plugins.common import pki


@pytest.fixture(scope="module")
def ca() -> pki.CA:
    return pki.CA.create()


def test_ca_is_a_ca_and_round_trips(ca: pki.CA, tmp_path: Path) -> None:
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca.save(tmp_path)
    assert (tmp_path / "ca.key").stat().st_mode & 0o777 == 0o600
    again = pki.CA.load(tmp_path)
    assert again.der == ca.der
    assert pki.CA.ensure(tmp_path).hash == ca.hash
    fresh = pki.CA.ensure(tmp_path / "new")
    assert (tmp_path / "new" / "ca.crt").exists() and fresh.hash != ca.hash


def test_missing_ca_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(pki.CertificateError, match="ca.crt"):
        pki.CA.load(tmp_path)


def test_server_cert_has_ip_and_dns_sans(ca: pki.CA) -> None:
    cert, _key = pki.issue_server_cert(ca, ["10.0.0.5", "127.0.0.1", "cloud.example"])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.0.0.5") in san.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert san.get_values_for_type(x509.DNSName) == ["cloud.example"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert ca.verifies(cert)


def test_csr_subject_and_signing(ca: pki.CA) -> None:
    csr, key = pki.make_csr("edge-1")
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:edge-1"
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    der = csr.public_bytes(serialization.Encoding.DER)
    pem = csr.public_bytes(serialization.Encoding.PEM)
    for body in (der, pem):
        cert = pki.sign_csr(ca, pki.csr_from_bytes(body), node="edge-1")
        assert pki.node_from_cert(cert) == "edge-1"
        assert ca.verifies(cert)
        assert cert.public_key().public_numbers() == key.public_key().public_numbers()
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 364 <= life.days <= 366


def test_csr_for_another_node_is_refused(ca: pki.CA) -> None:
    csr, _ = pki.make_csr("edge-2")
    with pytest.raises(pki.CertificateError, match="system:node:edge-1"):
        pki.sign_csr(ca, csr, node="edge-1")


def test_garbage_csr_is_refused() -> None:
    with pytest.raises(pki.CertificateError, match="not a CSR"):
        pki.csr_from_bytes(b"hello")
    with pytest.raises(pki.CertificateError, match="no CSR"):
        pki.csr_from_bytes(b"")


def test_cert_from_another_ca_does_not_verify(ca: pki.CA) -> None:
    other = pki.CA.create()
    cert = pki.sign_csr(other, pki.make_csr("edge-1")[0], node="edge-1")
    assert not ca.verifies(cert)


def test_token_round_trip_and_format(ca: pki.CA) -> None:
    token = pki.make_token(ca)
    parts = token.split(".")
    assert len(parts) == 4 and parts[0] == ca.hash == pki.ca_hash(ca.der)
    claims = pki.verify_token(ca, token)
    assert abs(claims["exp"] - (time.time() + 24 * 3600)) < 5
    # the JWT alone (what edgecore sends as the bearer) verifies too
    assert pki.verify_token(ca, token.split(".", 1)[1])["exp"] == claims["exp"]
    assert pki.split_token(token) == (ca.hash, token.split(".", 1)[1])


def test_expired_token_is_refused(ca: pki.CA) -> None:
    token = pki.make_token(ca, now=time.time() - 25 * 3600)
    with pytest.raises(pki.TokenError, match="expired"):
        pki.verify_token(ca, token)


def test_token_from_another_ca_is_refused(ca: pki.CA) -> None:
    other = pki.CA.create()
    token = pki.make_token(other)
    with pytest.raises(pki.TokenError, match="another CA"):
        pki.verify_token(ca, token)
    with pytest.raises(pki.TokenError, match="signature"):
        pki.verify_token(ca, token.split(".", 1)[1])


@pytest.mark.parametrize("bad", ["", "abc", "a.b.c.d", "HASH.x.y", "HASH.!!.!!.!!", "HASH.e30.e30.AAAA"])
def test_malformed_tokens_are_refused(ca: pki.CA, bad: str) -> None:
    with pytest.raises(pki.TokenError, match="malformed|signature|algorithm"):
        pki.verify_token(ca, bad.replace("HASH", ca.hash))


def test_rotation_time_is_inside_the_lifetime(ca: pki.CA) -> None:
    cert = pki.sign_csr(ca, pki.make_csr("edge-1")[0], days=1)
    begin = cert.not_valid_before_utc.timestamp()
    assert pki.rotation_time(cert, 0.7) == pytest.approx(begin + 0.7 * 86401, abs=2)


def _write(directory: Path, name: str, cert: x509.Certificate, key: pki.Key) -> tuple[str, str]:
    (directory / f"{name}.crt").write_bytes(pki.cert_pem(cert))
    (directory / f"{name}.key").write_bytes(pki.key_pem(key))
    return str(directory / f"{name}.crt"), str(directory / f"{name}.key")


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """A TLS handshake over memory BIOs; returns the client certificate CN the server saw."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    s = server.wrap_bio(s_in, s_out, server_side=True)
    c = client.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    done = {"s": False, "c": False}
    for _ in range(10):
        for name, side in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            c.write(b"x")  # TLS 1.3: the server checks the client certificate when data flows
            s_in.write(c_out.read())
            s.read(1)
            break
    peer = s.getpeercert()
    assert peer is not None
    names = {str(pair[0][0]): str(pair[0][1]) for pair in peer["subject"]}
    return names["commonName"]


def test_certificates_work_for_mutual_tls(ca: pki.CA, tmp_path: Path) -> None:
    server_cert, server_key = pki.issue_server_cert(ca, ["127.0.0.1"])
    node_cert = pki.sign_csr(ca, (csr_key := pki.make_csr("edge-1"))[0])
    (tmp_path / "ca.crt").write_bytes(ca.pem)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tmp_path / "ca.crt"))
    server.load_cert_chain(*_write(tmp_path, "server", server_cert, server_key))
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(cadata=ca.der)
    client.load_cert_chain(*_write(tmp_path, "node", node_cert, csr_key[1]))
    assert _handshake(server, client) == "system:node:edge-1"
    # a node certificate from another CA is refused by the server
    other = pki.CA.create()
    stranger = ssl.create_default_context(cadata=ca.der)
    stranger.load_cert_chain(*_write(tmp_path, "stranger", pki.sign_csr(other, csr_key[0]), csr_key[1]))
    with pytest.raises(ssl.SSLError):
        _handshake(server, stranger)


def test_cert_validity_reads_a_pem_file_without_cryptography(tmp_path: Path) -> None:
    ca = pki.CA.create()
    cert, _ = pki.issue_server_cert(ca, ["127.0.0.1"])
    path = tmp_path / "server.crt"
    path.write_bytes(pki.cert_pem(cert))
    begin, end = pki.cert_validity(path)
    assert begin == cert.not_valid_before_utc.timestamp()
    assert end == cert.not_valid_after_utc.timestamp()


def test_importing_pki_does_not_load_cryptography() -> None:
    # An edge that already holds its certificate must not pay ~8 MB for cryptography.
    import subprocess
    import sys

    code = "import sys, kubeedge.plugins.common.pki; print('cryptography' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
