"""The SPDY/3.1 codec (plugins/common/spdy.py): frames round trip, header blocks inflate with the SPDY/3
dictionary, and a SYN_STREAM written by another implementation (node-spdy's parser tests) decodes; and the
connection on top of it (spdy_session.py) between two ends over a real TCP connection."""

from __future__ import annotations

import zlib

import pytest
import trio

from kubeedge.plugins.common import spdy
from kubeedge.plugins.common.spdy_session import SpdyConnection, SpdyStream


def test_dictionary_is_the_spdy3_one() -> None:
    # the size and the Adler-32 id every SPDY/3 peer checks in the zlib header (FDICT)
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")


FRAMES: list[spdy.Frame] = [
    spdy.DataFrame(1, b"hello"),
    spdy.DataFrame(3, b"", fin=True),
    spdy.DataFrame(5, bytes(range(256)) * 100, fin=True),
    spdy.SynStream(1, [("streamtype", "error")], priority=0),
    spdy.SynStream(3, [("streamtype", "stdin"), ("x-multi", "a\x00b")], associated_to=1, priority=3, fin=True),
    spdy.SynStream(5, [], unidirectional=True),
    spdy.SynReply(1, []),
    spdy.SynReply(3, [("status", "200 OK")], fin=True),
    spdy.RstStream(7, spdy.REFUSED_STREAM),
    spdy.Settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: 65536, spdy.SETTINGS_MAX_CONCURRENT_STREAMS: 100}),
    spdy.Settings({}, clear=True),
    spdy.Ping(1),
    spdy.Ping(0xFFFFFFFE),
    spdy.GoAway(9, spdy.GOAWAY_OK),
    spdy.HeadersFrame(3, [("x-extra", "1")], fin=True),
    spdy.WindowUpdate(0, 32768),
    spdy.WindowUpdate(5, 1),
    spdy.UnknownFrame(0x99, 0, b"future"),
]


def test_frames_round_trip_in_order_and_across_any_split() -> None:
    sender, receiver = spdy.Codec(), spdy.Codec()
    wire = b"".join(sender.encode(frame) for frame in FRAMES)
    assert receiver.feed(wire) == FRAMES
    # the same bytes one at a time (a second pair: the header contexts are per connection, in order)
    sender, receiver = spdy.Codec(), spdy.Codec()
    wire = b"".join(sender.encode(frame) for frame in FRAMES)
    got: list[spdy.Frame] = []
    for i in range(len(wire)):
        got += receiver.feed(wire[i : i + 1])
    assert got == FRAMES


def test_layouts_are_the_specs() -> None:
    codec = spdy.Codec()
    assert codec.encode(spdy.DataFrame(1, b"ab", fin=True)) == bytes.fromhex("00000001 01000002") + b"ab"
    assert codec.encode(spdy.Ping(7)) == bytes.fromhex("80030006 00000004 00000007")
    assert codec.encode(spdy.RstStream(3, 5)) == bytes.fromhex("80030003 00000008 00000003 00000005")
    assert codec.encode(spdy.WindowUpdate(0, 65536)) == bytes.fromhex("80030009 00000008 00000000 00010000")
    assert codec.encode(spdy.GoAway(1, 0)) == bytes.fromhex("80030007 00000008 00000001 00000000")
    assert codec.encode(spdy.Settings({7: 65536})) == bytes.fromhex("80030004 0000000c 00000001 00000007 00010000")
    syn = codec.encode(spdy.SynStream(1, [("StreamType", "error")], priority=2, fin=True))
    assert syn[:4] == bytes.fromhex("80030001") and syn[4] == spdy.FLAG_FIN
    assert syn[8:18] == bytes.fromhex("00000001 00000000 4000")


def test_header_block_inflates_with_the_dictionary() -> None:
    compressed = spdy.HeaderCompressor().compress([("streamtype", "stdout"), ("Upgrade", "SPDY/3.1")])
    # a zlib stream whose header names a preset dictionary (FDICT) with the SPDY/3 dictionary's Adler-32
    assert compressed[1] & 0x20 and compressed[2:6] == (0xE3C6A7C2).to_bytes(4, "big")
    with pytest.raises(zlib.error):
        zlib.decompressobj().decompress(compressed)  # not without the dictionary
    inflater = zlib.decompressobj(zdict=spdy.DICTIONARY)
    block = inflater.decompress(compressed)
    assert spdy.decode_header_block(block) == [("streamtype", "stdout"), ("upgrade", "SPDY/3.1")]
    assert block == spdy.encode_header_block([("streamtype", "stdout"), ("upgrade", "SPDY/3.1")])


def test_a_syn_stream_from_another_implementation() -> None:
    # node-spdy's parser test vector: SYN_STREAM id 1, headers :method GET and :path /, then a SYN_REPLY
    # with no headers, both in one compression context
    syn = bytes.fromhex(
        "800300010000002c0000000100000000000078f9e3c6a7c202e50e507ab442a45a77d7105006b32a4804974d8cfa00000000ffff"
    )
    frames = spdy.Codec().feed(syn)
    assert len(frames) == 1 and isinstance(frames[0], spdy.SynStream)
    assert frames[0].stream_id == 1 and not frames[0].fin
    assert frames[0].header(":method") == "GET" and frames[0].header(":path") == "/"
    reply = bytes.fromhex("80030002000000140000000178f9e3c6a7c202a6230600000000ffff")
    assert spdy.Codec().feed(reply) == [spdy.SynReply(1, [])]


def test_bad_input_says_what_is_wrong() -> None:
    with pytest.raises(spdy.SpdyError, match="version 2"):
        spdy.Codec().feed(bytes.fromhex("80020006 00000004 00000001"))
    with pytest.raises(spdy.SpdyError, match="too short"):
        spdy.Codec().feed(bytes.fromhex("80030003 00000004 00000001"))
    with pytest.raises(spdy.SpdyError, match="inflate"):
        spdy.Codec().feed(bytes.fromhex("80030002 00000008 00000001") + b"junk")
    assert spdy.Codec().feed(bytes.fromhex("80030006 00000004 000000")) == []  # incomplete: waits


async def connected_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    return client, server


async def test_session_streams_flow_control_ping_reset_and_goaway() -> None:
    """Two SpdyConnections over a real TCP connection: both keep SPDY/3.1 windows (announced in SETTINGS), so
    300 kB each way arrive intact with no frame beyond the window granted, however slowly the reader reads."""
    client_sock, server_sock = await connected_pair()
    client = SpdyConnection(client_sock, server=False, name="client")
    server = SpdyConnection(server_sock, server=True, name="server")
    payload = bytes(range(256)) * 1200  # 307200 bytes: several windows
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await nursery.start(server.run)
        with trio.fail_after(10):
            opened: list[SpdyStream] = []

            async def open_one() -> None:
                opened.append(await client.open_stream([("streamtype", "stdin")]))

            nursery.start_soon(open_one)
            accepted = await server.accept()
            assert accepted is not None and accepted.header("streamType") == "stdin"
            await accepted.reply([])
            while not opened:
                await trio.lowlevel.checkpoint()
            stream = opened[0]

            async def upload() -> None:
                await stream.send(payload, fin=True)

            nursery.start_soon(upload)
            # the server reads nothing until the client has used the whole window it was granted
            while accepted._buffered < 65536:
                accepted._readable = trio.Event()
                await accepted._readable.wait()
            await server.ping()  # the client answers our PING; anything sent before it is here
            assert accepted._buffered == 65536 and server.window_violations == 0
            assert await accepted.receive_all() == payload
            back: list[bytes] = []

            async def download() -> None:
                back.append(await stream.receive_all())

            async with trio.open_nursery() as transfer:
                transfer.start_soon(download)
                await accepted.send(payload[::-1], fin=True)
            assert back == [payload[::-1]]
            assert client.window_violations == 0 and server.window_violations == 0
            await client.ping()

            # a reset ends the other side's reads at once
            second: list[SpdyStream] = []

            async def open_second() -> None:
                second.append(await client.open_stream([("streamtype", "stdout")]))

            nursery.start_soon(open_second)
            other = await server.accept()
            assert other is not None
            await other.reply([])
            while not second:
                await trio.lowlevel.checkpoint()
            await second[0].send_reset()
            assert await other.receive_some() == b"" and other.reset

            # after the server's GOAWAY the client opens no more streams
            await server.goaway()
            while not client.goaway_received:
                await client.ping()
            with pytest.raises(trio.BrokenResourceError, match="GOAWAY"):
                await client.open_stream([("streamtype", "error")])
        await client_sock.aclose()
        with trio.fail_after(5):
            await server.closed.wait()
        nursery.cancel_scope.cancel()
