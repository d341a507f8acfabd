"""The tunnel's frame codec, without I/O."""

from __future__ import annotations

import pytest

from kubeedge.plugins.common.stream_protocol import (
    ATTACH,
    CLOSE,
    DATA,
    EXEC,
    ExecRequest,
    FrameError,
    LogsRequest,
    decode_frame,
    decode_uvarint,
    encode_frame,
    encode_uvarint,
    exec_status,
)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**32, 2**63])
def test_uvarint_round_trip(value: int) -> None:
    data = encode_uvarint(value)
    assert decode_uvarint(data) == (value, len(data))


def test_uvarint_matches_go() -> None:
    assert encode_uvarint(300) == b"\xac\x02"  # Go's binary.PutUvarint(300)
    with pytest.raises(FrameError):
        decode_uvarint(b"\x80\x80")
    with pytest.raises(ValueError):
        encode_uvarint(-1)


def test_frames() -> None:
    frame = decode_frame(encode_frame(300, DATA, b"\x01hello"))
    assert (frame.connect_id, frame.type, frame.data) == (300, DATA, b"\x01hello")
    assert decode_frame(encode_frame(1, CLOSE)).data == b""
    with pytest.raises(FrameError, match="unknown type 9"):
        decode_frame(encode_frame(1, 9))
    with pytest.raises(FrameError, match="not JSON"):
        decode_frame(encode_frame(2, EXEC, b"{nope")).json()


def test_requests() -> None:
    logs = LogsRequest("default", "p", "c", follow=True, tail_lines=5)
    assert LogsRequest.decode(decode_frame(encode_frame(1, 0, logs.encode())).json()) == logs
    request = ExecRequest("default", "p", "c", command=["sh", "-c", "true"], stdin=True, tty=True)
    assert ExecRequest.decode(decode_frame(encode_frame(1, ATTACH, request.encode())).json()) == request
    with pytest.raises(FrameError, match="required"):
        ExecRequest.decode({"namespace": "default", "pod": "p"})
    with pytest.raises(FrameError, match="list of strings"):
        ExecRequest.decode({"namespace": "default", "pod": "p", "container": "c", "command": "ls"})


def test_exec_status_as_kubelet_writes_it() -> None:
    assert exec_status(["true"], 0) == {"metadata": {}, "status": "Success"}
    failed = exec_status(["sh", "-c", "exit 3"], 3)
    assert failed["reason"] == "NonZeroExitCode"
    assert (
        failed["message"]
        == "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
    )
    assert failed["details"] == {"causes": [{"reason": "ExitCode", "message": "3"}]}
    assert exec_status(["x"], None, "boom")["message"] == "boom"
