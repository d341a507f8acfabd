"""The cloud-edge PKI: the CA, server and node certificates, CSRs and KubeEdge's join token.

Everything is EC P-256, as KubeEdge. A node certificate's subject is ``CN=system:node:<node>,
O=system:nodes`` (edgecore checks the CN). The join token is KubeEdge's (``pkg/security/token``):
``hex(sha256(CA DER)) + "." + JWT``, the JWT HS256-signed with the CA private key's DER bytes and valid
24 h; the edge compares the hash with the CA it downloads before trusting it.

This is a public utility: cloudhub, edgehub and keadm use it, and any plugin may.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

# cryptography costs about 8 MB of RSS to import: it is imported by the functions that need it, so an edge
# that already holds its certificate never loads it (see cert_validity).
if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "CA",
    "NODE_ORGANIZATION",
    "TOKEN_VALIDITY",
    "BootstrapError",
    "CertificateError",
    "TokenError",
    "bootstrap_node_cert",
    "ca_hash",
    "cert_der",
    "cert_from_bytes",
    "cert_pem",
    "cert_validity",
    "csr_from_bytes",
    "generate_key",
    "issue_server_cert",
    "key_pem",
    "load_key",
    "make_csr",
    "make_token",
    "node_common_name",
    "node_from_cert",
    "rotation_time",
    "sign_csr",
    "split_token",
    "verify_token",
    "write_private",
]

NODE_ORGANIZATION = "system:nodes"
NODE_CN_PREFIX = "system:node:"
TOKEN_VALIDITY = 24 * 3600.0
CA_VALIDITY_DAYS = 100 * 365
SERVER_VALIDITY_DAYS = 100 * 365
EDGE_VALIDITY_DAYS = 365

Key: TypeAlias = "ec.EllipticCurvePrivateKey"


class TokenError(ValueError):
    """A join token that cannot be used; the text says why (malformed, wrong CA, bad signature, expired)."""


class CertificateError(ValueError):
    """A CSR or certificate that cannot be used; the text says why."""


# -- keys and encodings ---------------------------------------------------------------------------------


def generate_key() -> Key:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: Key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key(data: bytes) -> Key:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError("expected an EC private key")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def cert_der(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.DER)


def cert_from_bytes(data: bytes) -> x509.Certificate:
    """A certificate from PEM or DER."""
    from cryptography import x509

    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"not a certificate (PEM or DER): {exc}") from None


def csr_from_bytes(data: bytes) -> x509.CertificateSigningRequest:
    """A CSR from PEM or DER (edgecore sends DER; openssl users send PEM)."""
    from cryptography import x509

    if not data.strip():
        raise CertificateError("no CSR in the request body")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise CertificateError(f"the request body is not a CSR (PEM or DER): {exc}") from None


def write_private(path: Path, data: bytes) -> None:
    """Write a key file readable by its owner only (created 0600, never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def node_common_name(node: str) -> str:
    return NODE_CN_PREFIX + node


def node_from_cert(cert: x509.Certificate) -> str:
    """The node a client certificate names (``CN=system:node:<node>``), or ``""`` when it names none."""
    from cryptography.x509.oid import NameOID

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return ""
    cn = str(names[0].value)
    return cn[len(NODE_CN_PREFIX) :] if cn.startswith(NODE_CN_PREFIX) else ""


# -- the CA -----------------------------------------------------------------------------------------------


@dataclass
class CA:
    cert: x509.Certificate
    key: Key

    @classmethod
    def create(cls, common_name: str = "KubeEdge", days: int = CA_VALIDITY_DAYS) -> CA:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        key = generate_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, directory: Path) -> CA:
        """Load ``ca.crt`` + ``ca.key`` (PEM) from ``directory``."""
        try:
            cert = cert_from_bytes((directory / "ca.crt").read_bytes())
            key = load_key((directory / "ca.key").read_bytes())
        except FileNotFoundError as exc:
            raise CertificateError(f"no CA in {directory}: {exc.filename} is missing") from None
        return cls(cert, key)

    @classmethod
    def ensure(cls, directory: Path) -> CA:
        """Load the CA in ``directory``, creating it on first use."""
        if (directory / "ca.crt").exists() and (directory / "ca.key").exists():
            return cls.load(directory)
        ca = cls.create()
        ca.save(directory)
        return ca

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        write_private(directory / "ca.key", key_pem(self.key))
        (directory / "ca.crt").write_bytes(cert_pem(self.cert))

    @property
    def der(self) -> bytes:
        return cert_der(self.cert)

    @property
    def pem(self) -> bytes:
        return cert_pem(self.cert)

    @property
    def hash(self) -> str:
        return ca_hash(self.der)

    @property
    def signing_key_bytes(self) -> bytes:
        # Go's x509.MarshalECPrivateKey: the SEC1 DER of the key, which is what KubeEdge signs JWTs with.
        from cryptography.hazmat.primitives import serialization

        return self.key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )

    def verifies(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` was issued (signed) by this CA."""
        from cryptography.exceptions import InvalidSignature

        if cert.issuer != self.cert.subject:
            return False
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def ca_hash(ca_der: bytes) -> str:
    return hashlib.sha256(ca_der).hexdigest()


# -- certificates -----------------------------------------------------------------------------------------


def _san(addresses: list[str] | tuple[str, ...]) -> list[x509.GeneralName]:
    from cryptography import x509

    names: list[x509.GeneralName] = []
    for item in addresses:
        item = item.strip()
        if not item:
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(item)))
        except ValueError:
            names.append(x509.DNSName(item))
    return names


def issue_server_cert(
    ca: CA,
    addresses: list[str] | tuple[str, ...] = ("127.0.0.1", "localhost"),
    common_name: str = "cloudhub",
    days: int = SERVER_VALIDITY_DAYS,
) -> tuple[x509.Certificate, Key]:
    """A server certificate for cloudhub: IP and DNS SANs from ``addresses`` (IPs become IP SANs)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = generate_key()
    now = _now()
    sans = _san(list(addresses)) or _san(["127.0.0.1", "localhost"])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return cert, key


def server_cert_covers(ca: CA, crt: Path, wanted: list[str]) -> bool:
    """Whether the serving pair ``crt`` (+ the ``.key`` beside it) exists, was issued by ``ca`` and names every
    address in ``wanted`` among its SANs: if not, it is to be issued again."""
    from cryptography import x509

    if not crt.exists() or not crt.with_suffix(".key").exists():
        return False
    cert = cert_from_bytes(crt.read_bytes())
    if not ca.verifies(cert):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
    return set(wanted) <= have


def make_csr(node: str, key: Key | None = None) -> tuple[x509.CertificateSigningRequest, Key]:
    """The CSR an edge node sends: ``CN=system:node:<node>``, ``O=system:nodes``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = key or generate_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODE_ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, node_common_name(node)),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr, key


def sign_csr(
    ca: CA,
    csr: x509.CertificateSigningRequest,
    *,
    node: str | None = None,
    days: float = EDGE_VALIDITY_DAYS,
    server: bool = False,
) -> x509.Certificate:
    """Sign a node's CSR. With ``node``, the CSR's CN must be ``system:node:<node>``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not csr.is_signature_valid:
        raise CertificateError("the CSR's signature does not verify")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else ""
    if node is not None and cn != node_common_name(node):
        raise CertificateError(f"the CSR names {cn or 'no CN'!r}, expected {node_common_name(node)!r}")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise CertificateError("the CSR's key is not an EC key")
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(seconds=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


def rotation_time(cert: x509.Certificate, fraction: float) -> float:
    """The Unix time at which a certificate is renewed: NotBefore + ``fraction`` of its lifetime."""
    begin = cert.not_valid_before_utc.timestamp()
    end = cert.not_valid_after_utc.timestamp()
    return begin + (end - begin) * fraction


def cert_validity(path: Path) -> tuple[float, float]:
    """(NotBefore, NotAfter) of a PEM certificate file as Unix times, without importing cryptography.

    The standard library's own decoder (the one ``ssl.getpeercert`` uses) reads the file; where it is not
    available, cryptography does.
    """
    import ssl

    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is not None:
        fields = decode(str(path))
        return ssl.cert_time_to_seconds(fields["notBefore"]), ssl.cert_time_to_seconds(fields["notAfter"])
    cert = cert_from_bytes(path.read_bytes())
    return cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()


# -- the join token -----------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(ca: CA, *, validity: float = TOKEN_VALIDITY, now: float | None = None) -> str:
    """``hex(sha256(CA DER)) + "." + JWT``; the JWT is HS256 with ``exp`` = now + ``validity``."""
    issued = time.time() if now is None else now
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps({"exp": int(issued + validity)}, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = _b64(hmac.new(ca.signing_key_bytes, signing_input, hashlib.sha256).digest())
    return f"{ca.hash}.{header}.{payload}.{signature}"


def split_token(token: str) -> tuple[str, str]:
    """(CA hash, JWT) of a join token. Raises :class:`TokenError` when it is not one."""
    parts = token.strip().split(".")
    if len(parts) != 4 or not all(parts):
        raise TokenError("malformed token: expected <ca-hash>.<jwt> (4 dot-separated parts)")
    ca_part = parts[0].lower()
    if len(ca_part) != 64 or any(c not in "0123456789abcdef" for c in ca_part):
        raise TokenError("malformed token: the first part is not a hex SHA-256 of the CA")
    return ca_part, ".".join(parts[1:])


def verify_token(ca: CA, token: str, *, now: float | None = None) -> dict[str, Any]:
    """Check a JWT (or a whole join token) against the CA; return its claims or raise :class:`TokenError`."""
    token = token.strip()
    if token.count(".") == 3:
        ca_part, jwt = split_token(token)
        if ca_part != ca.hash:
            raise TokenError("token was issued for another CA (CA hash mismatch)")
    else:
        jwt = token
    parts = jwt.split(".")
    if len(parts) != 3:
        raise TokenError("malformed token: the JWT has not 3 parts")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except ValueError:
        raise TokenError("malformed token: a JWT part is not base64url JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise TokenError("token: unsupported JWT algorithm (expected HS256)")
    expected = hmac.new(ca.signing_key_bytes, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise TokenError("token signature is invalid (not signed by this cloud's CA)")
    if not isinstance(claims, dict):
        raise TokenError("malformed token: claims are not an object")
    exp = claims.get("exp")
    current = time.time() if now is None else now
    if not isinstance(exp, int | float) or exp <= current:
        raise TokenError("token has expired; get a new one with `keadm gettoken`")
    return claims


# -- the edge's side of the bootstrap (used by edgehub and `keadm join`) -----------------------------------


class BootstrapError(Exception):
    """The node could not get its certificate; ``step`` names what failed, the text says why."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


async def bootstrap_node_cert(
    http_server: str,
    token: str,
    node: str,
    pki_dir: Path,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> None:
    """Fetch and check the CA, then get ``node``'s certificate signed; write ca.crt, edge.crt, edge.key.

    Follows edgecore: ``GET /ca.crt`` without verification, its SHA-256 compared with the token's first
    part; then ``GET /edge.crt`` (a DER CSR as the body, ``Authorization: Bearer <jwt>``, ``NodeName``)
    over TLS verified against that CA. Raises :class:`BootstrapError`.
    """
    import ssl

    import httpx
    from cryptography.hazmat.primitives import serialization

    try:
        ca_part, jwt = split_token(token)
    except TokenError as exc:
        raise BootstrapError("check the token", str(exc)) from None
    base = http_server.rstrip("/")
    try:
        async with httpx.AsyncClient(verify=False, timeout=timeout) as client:
            response = await client.get(f"{base}/ca.crt")
    except httpx.HTTPError as exc:
        raise BootstrapError("fetch the CA", f"{base} unreachable: {_http_reason(exc)}") from None
    if response.status_code != 200:
        raise BootstrapError("fetch the CA", f"{base}/ca.crt answered {response.status_code}")
    ca_der = response.content
    if ca_hash(ca_der) != ca_part:
        raise BootstrapError("check the CA", "CA hash mismatch: the cloud's CA is not the one the token was issued for")
    ca_cert = cert_from_bytes(ca_der)
    ctx = ssl.create_default_context(cadata=cert_der(ca_cert))
    csr, key = make_csr(node)
    try:
        async with httpx.AsyncClient(verify=ctx, timeout=timeout) as client:
            response = await client.request(
                "GET",
                f"{base}/edge.crt",
                content=csr.public_bytes(serialization.Encoding.DER),
                headers={"Authorization": f"Bearer {jwt}", "NodeName": node},
            )
    except httpx.HTTPError as exc:
        raise BootstrapError("get the node certificate", f"{base} unreachable: {_http_reason(exc)}") from None
    if response.status_code != 200:
        raise BootstrapError(
            "get the node certificate", f"the cloud answered {response.status_code}: {response.text.strip()}"
        )
    cert = cert_from_bytes(response.content)
    import trio

    await trio.to_thread.run_sync(_store_node_credentials, pki_dir, ca_cert, cert, key)


def _store_node_credentials(pki_dir: Path, ca_cert: x509.Certificate, cert: x509.Certificate, key: Key) -> None:
    pki_dir.mkdir(parents=True, exist_ok=True)
    (pki_dir / "ca.crt").write_bytes(cert_pem(ca_cert))
    write_private(pki_dir / "edge.key", key_pem(key))
    (pki_dir / "edge.crt").write_bytes(cert_pem(cert))


def _http_reason(exc: BaseException) -> str:
    """httpx errors often carry no text; name the innermost cause (refused, TLS verification...)."""
    seen: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 5:
        text = str(current).strip()
        if text and text not in seen:
            seen.append(text)
        current = current.__cause__ or current.__context__
    return "; ".join(seen) or type(exc).__name__
