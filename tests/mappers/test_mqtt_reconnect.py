"""A publish waiting for the broker completes once the broker appears, however many attempts failed first."""

from __future__ import annotations

import subprocess
from pathlib import Path

import trio
from mapperkit import MOSQUITTO, free_port

from kubeedge.mappers.sdk.mqtt import MqttClient


async def test_publish_waits_through_failed_connection_attempts(tmp_path: Path) -> None:
    port = free_port()
    publisher = MqttClient(f"mqtt://127.0.0.1:{port}", "waiting-publisher")
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    published = trio.Event()

    async def publish() -> None:
        await publisher.publish("t/x", "hello")
        published.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(publisher.run, False)  # no broker yet: attempts fail and back off
        nursery.start_soon(publish)
        await trio.sleep(1.0)  # several failed attempts (0.2 s, 0.4 s, 0.8 s apart)
        assert not published.is_set()
        broker = await trio.lowlevel.open_process(
            [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            with trio.fail_after(15):
                await published.wait()
        finally:
            broker.terminate()
            await broker.wait()
        nursery.cancel_scope.cancel()
