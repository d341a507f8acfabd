"""The user's journey, as real processes: keadm init, kubeedge run (cloud), keadm join, kubeedge run (edge);
a resource sent on the cloud reaches the edge's store over mutual TLS and its ACK is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import yaml
from link_procs import cloud_ports, keadm, kubeedge_run, poll, read_rows

from kubeedge import Message
from kubeedge.plugins.common import pki


async def test_keadm_init_join_and_a_message_over_mutual_tls(tmp_path: Path) -> None:
    cloud_dir, edge_dir = tmp_path / "cloud", tmp_path / "edge"
    init = await keadm(
        "init",
        "--advertise-address",
        "127.0.0.1",
        "--data-dir",
        str(cloud_dir),
        "--port",
        "0",
        "--https-port",
        "0",
        "--modules",
        "cloudhub",
        "--systemd",
    )
    out = init.stdout.decode()
    assert "[5/6] Writing" in out and f"kubeedge run --profile {cloud_dir / 'cloud.yaml'}" in out
    assert (cloud_dir / "cloudcore.service").read_text().count("run --profile") == 1
    profile = yaml.safe_load((cloud_dir / "cloud.yaml").read_text())
    assert profile["role"] == "cloud" and list(profile["modules"]) == ["cloudhub"]
    profile["modules"]["cloudhub"]["testIngress"] = True  # lets this test play the controllers' part
    (cloud_dir / "cloud.yaml").write_text(yaml.safe_dump(profile))

    async with kubeedge_run(cloud_dir / "cloud.yaml", "cloud") as cloud:
        await cloud.wait_log("cloudhub serving")
        port, https_port = cloud_ports(cloud_dir)
        token = (await keadm("gettoken", "--data-dir", str(cloud_dir))).stdout.decode().strip()
        assert pki.verify_token(pki.CA.load(cloud_dir / "pki"), token)

        join = await keadm(
            "join",
            "--cloudcore-ipport",
            f"127.0.0.1:{port}",
            "--certport",
            str(https_port),
            "--token",
            token,
            "--edgenode-name",
            "edge-1",
            "--data-dir",
            str(edge_dir),
            "--modules",
            "edgehub,metamanager",
        )
        assert "[4/4] Checking the profile ... ok" in join.stdout.decode()
        edge_profile = yaml.safe_load((edge_dir / "edge.yaml").read_text())
        assert edge_profile["node"]["name"] == "edge-1"
        assert edge_profile["modules"]["edgehub"]["server"] == f"127.0.0.1:{port}"
        assert "token" not in edge_profile["modules"]["edgehub"]  # the certificate is there now

        async with kubeedge_run(edge_dir / "edge.yaml", "edge") as edge:
            await edge.wait_log("connected to cloudhub")
            await cloud.wait_log("node edge-1 connected")
            message = Message(
                source="edgecontroller",
                group="resource",
                operation="insert",
                resource="node/edge-1/default/configmap/journey",
                resource_version="42",
                content={
                    "kind": "ConfigMap",
                    "metadata": {"name": "journey", "namespace": "default", "uid": "u-42"},
                    "data": {"k": "v"},
                },
            )
            async with httpx.AsyncClient(verify=False) as client:
                response = await client.post(f"https://127.0.0.1:{https_port}/test/send", content=message.to_json())
            assert response.status_code == 202

            def edge_has_it() -> bool:
                rows = read_rows(
                    edge_dir / "kubeedge.db",
                    "select resource_version, value from meta where key='default/configmap/journey'",
                )
                return bool(rows) and rows[0][0] == "42" and json.loads(rows[0][1])["data"] == {"k": "v"}

            def cloud_recorded_ack() -> bool:
                rows = read_rows(cloud_dir / "kubeedge.db", "select name, resource_version from objectsync")
                return rows == [("edge-1.u-42", "42")]

            await poll(edge_has_it)
            await poll(cloud_recorded_ack)
        await cloud.wait_log("node edge-1 disconnected")
    assert cloud.process.returncode == 0 and edge.process.returncode == 0

    # a second join with a wrong token fails at a named step, exit 2
    bad = await keadm(
        "join",
        "--cloudcore-ipport",
        "127.0.0.1:1",
        "--certport",
        "1",
        "--token",
        token,
        "--edgenode-name",
        "edge-2",
        "--data-dir",
        str(tmp_path / "e2"),
        check=False,
    )
    assert bad.returncode == 2 and b"failed at step 'fetch the CA'" in bad.stderr and b"unreachable" in bad.stderr

    reset = await keadm("reset", "--data-dir", str(edge_dir))
    assert b"removed" in reset.stdout
    assert not (edge_dir / "pki").exists() and not (edge_dir / "edge.yaml").exists()
