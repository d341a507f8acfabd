"""cloudhub's HTTPS bootstrap (:10002): /ca.crt and /edge.crt, with clear refusals."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from link_harness import Cloud, run_cloud

from kubeedge.plugins.common import pki


@pytest.fixture
async def cloud(tmp_path: Path):
    async with run_cloud(tmp_path / "cloud") as c:
        yield c


def _client(cloud: Cloud) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=cloud.http_server, verify=ssl.create_default_context(cadata=cloud.ca.der))


def _csr(node: str, pem: bool = False) -> bytes:
    csr, _ = pki.make_csr(node)
    return csr.public_bytes(serialization.Encoding.PEM if pem else serialization.Encoding.DER)


async def _edge_crt(cloud: Cloud, token: str | None, node: str | None, body: bytes) -> httpx.Response:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if node is not None:
        headers["NodeName"] = node
    async with _client(cloud) as client:
        return await client.request("GET", "/edge.crt", content=body, headers=headers)


async def test_ca_crt_is_der_and_matches_the_token(cloud: Cloud, tmp_path: Path) -> None:
    async with _client(cloud) as client:
        response = await client.get("/ca.crt")
    assert response.status_code == 200
    assert pki.ca_hash(response.content) == cloud.token().split(".")[0]
    assert (tmp_path / "cloud" / "pki" / "ca.crt").read_bytes() == cloud.ca.pem


@pytest.mark.parametrize("pem", [False, True])
async def test_edge_crt_signs_a_der_or_pem_csr(cloud: Cloud, pem: bool) -> None:
    jwt = cloud.token().split(".", 1)[1]
    response = await _edge_crt(cloud, jwt, "edge-9", _csr("edge-9", pem))
    assert response.status_code == 200, response.text
    cert = pki.cert_from_bytes(response.content)
    assert pki.node_from_cert(cert) == "edge-9" and cloud.ca.verifies(cert)


async def test_whole_token_is_accepted_as_bearer(cloud: Cloud) -> None:
    response = await _edge_crt(cloud, cloud.token(), "edge-9", _csr("edge-9"))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("no-token", 401, "missing bearer token"),
        ("expired", 401, "expired"),
        ("other-ca", 401, "signature is invalid"),
        ("garbage", 401, "malformed"),
        ("no-node", 400, "NodeName"),
        ("wrong-cn", 403, "system:node:edge-9"),
        ("bad-csr", 400, "not a CSR"),
    ],
)
async def test_edge_crt_refusals_say_why(cloud: Cloud, case: str, status: int, reason: str) -> None:
    token: str | None = cloud.token().split(".", 1)[1]
    node: str | None = "edge-9"
    body = _csr("edge-9")
    if case == "no-token":
        token = None
    elif case == "expired":
        token = pki.make_token(cloud.ca, now=time.time() - 25 * 3600).split(".", 1)[1]
    elif case == "other-ca":
        token = pki.make_token(pki.CA.create()).split(".", 1)[1]
    elif case == "garbage":
        token = "abc"
    elif case == "no-node":
        node = None
    elif case == "wrong-cn":
        body = _csr("edge-10")
    elif case == "bad-csr":
        body = b"not a csr"
    response = await _edge_crt(cloud, token, node, body)
    assert response.status_code == status
    assert reason in response.text


async def test_unknown_route_is_404(cloud: Cloud) -> None:
    async with _client(cloud) as client:
        response = await client.get("/nope")
    assert response.status_code == 404 and "no route" in response.text


async def test_bootstrap_of_a_node_with_a_wrong_token_names_the_step(cloud: Cloud, tmp_path: Path) -> None:
    other = pki.make_token(pki.CA.create())
    with pytest.raises(pki.BootstrapError) as info:
        await pki.bootstrap_node_cert(cloud.http_server, other, "edge-1", tmp_path / "pki")
    assert info.value.step == "check the CA" and "hash mismatch" in info.value.reason
    assert not (tmp_path / "pki" / "edge.crt").exists()
    expired = pki.make_token(cloud.ca, now=time.time() - 25 * 3600)
    with pytest.raises(pki.BootstrapError, match="401.*expired"):
        await pki.bootstrap_node_cert(cloud.http_server, expired, "edge-1", tmp_path / "pki")


async def test_bootstrap_against_nothing_says_unreachable(tmp_path: Path) -> None:
    import trio

    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # a port that was just free: connection refused
    ca = pki.CA.create()
    with pytest.raises(pki.BootstrapError) as info:
        await pki.bootstrap_node_cert(f"https://127.0.0.1:{port}", pki.make_token(ca), "edge-1", tmp_path)
    assert info.value.step == "fetch the CA" and "unreachable" in info.value.reason


async def test_bootstrap_writes_node_credentials(cloud: Cloud, tmp_path: Path) -> None:
    await pki.bootstrap_node_cert(cloud.http_server, cloud.token(), "edge-3", tmp_path / "pki")
    cert = pki.cert_from_bytes((tmp_path / "pki" / "edge.crt").read_bytes())
    assert pki.node_from_cert(cert) == "edge-3"
    assert (tmp_path / "pki" / "edge.key").stat().st_mode & 0o777 == 0o600
    assert pki.cert_from_bytes((tmp_path / "pki" / "ca.crt").read_bytes()) == cloud.ca.cert
