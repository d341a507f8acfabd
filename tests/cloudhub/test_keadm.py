"""keadm failures name their step and exit 2; gettoken/init/reset on their own."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from link_harness import Cloud, run_cloud, run_edge

from kubeedge.plugins.cloudhub.keadm import main
from kubeedge.plugins.common import pki


async def _keadm(*argv: str) -> int:
    # join runs its own trio loop, so keadm runs on a worker thread here
    return await trio.to_thread.run_sync(main, list(argv))


def _join(cloud: Cloud, token: str, node: str, data_dir: Path) -> list[str]:
    return [
        "join",
        "--cloudcore-ipport",
        cloud.server,
        "--certport",
        str(cloud.hub.https_port),
        "--token",
        token,
        "--edgenode-name",
        node,
        "--data-dir",
        str(data_dir),
        "--modules",
        "edgehub,metamanager",
    ]


async def test_join_failures_name_step_and_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with run_cloud(tmp_path / "cloud") as cloud:
        other = pki.make_token(pki.CA.create())
        assert await _keadm(*_join(cloud, other, "edge-1", tmp_path / "a")) == 2
        assert "failed at step 'check the CA': CA hash mismatch" in capsys.readouterr().err

        import time

        expired = pki.make_token(cloud.ca, now=time.time() - 30 * 3600)
        assert await _keadm(*_join(cloud, expired, "edge-1", tmp_path / "b")) == 2
        err = capsys.readouterr().err
        assert "failed at step 'get the node certificate': wrong or expired token" in err and "expired" in err

        assert await _keadm(*_join(cloud, "nonsense", "edge-1", tmp_path / "c")) == 2
        assert "failed at step 'check the arguments': malformed token" in capsys.readouterr().err

        assert await _keadm(*_join(cloud, cloud.token(), "Bad_Name", tmp_path / "d")) == 2
        assert "not a valid DNS-1123 name" in capsys.readouterr().err

        async with run_edge(tmp_path / "e1", "edge-1", cloud) as edge:
            await edge.wait_connected()
            assert await _keadm(*_join(cloud, cloud.token(), "edge-1", tmp_path / "e")) == 2
            assert "name in use" in capsys.readouterr().err

        assert await _keadm(*_join(cloud, cloud.token(), "edge-2", tmp_path / "f")) == 0
        out = capsys.readouterr().out
        assert "Edge node edge-2 joined" in out and (tmp_path / "f" / "pki" / "edge.crt").exists()


async def test_gettoken_without_init_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await _keadm("gettoken", "--data-dir", str(tmp_path)) == 2
    assert "failed at step 'read the CA'" in capsys.readouterr().err


async def test_init_keeps_an_existing_ca_and_reset_removes_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "init",
        "--advertise-address",
        "10.1.2.3,cloud.example",
        "--data-dir",
        str(tmp_path),
        "--modules",
        "cloudhub",
    ]
    assert await _keadm(*argv) == 0
    first = pki.CA.load(tmp_path / "pki").hash
    assert await _keadm(*argv) == 0
    assert pki.CA.load(tmp_path / "pki").hash == first
    out = capsys.readouterr().out
    assert "--cloudcore-ipport 10.1.2.3:10000" in out
    from cryptography import x509

    cert = pki.cert_from_bytes((tmp_path / "pki" / "server.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "cloud.example" in san.get_values_for_type(x509.DNSName)
    assert await _keadm("init", "--advertise-address", "bad address!", "--data-dir", str(tmp_path / "x")) == 2
    assert "failed at step 'check the arguments'" in capsys.readouterr().err
    assert await _keadm("init", "--data-dir", str(tmp_path / "y"), "--modules", "nosuchmodule") == 2
    assert "not installed: nosuchmodule" in capsys.readouterr().err
    assert await _keadm("reset", "--data-dir", str(tmp_path)) == 0
    assert not (tmp_path / "pki").exists() and not (tmp_path / "cloud.yaml").exists()
