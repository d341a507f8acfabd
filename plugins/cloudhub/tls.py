"""Server-side TLS over one trio socket with :class:`ssl.SSLObject` and memory BIOs.

trio's SSLStream serialises its socket I/O with internal locks; taking one is a scheduler turn, so a
read or a write costs two turns instead of one, and on a busy hub turns are the cost (bench/link.py).
A cloudhub connection has exactly one reader and, thanks to :class:`.wsconn.ServerLink`'s lock, one
writer at a time, so it does not need those locks: :class:`ServerTLS` reads and writes the socket
directly. Records the reader produces (a TLS 1.3 key update answer) wait in the outgoing BIO and leave
with the next write, so the reader never writes.
"""

from __future__ import annotations

import ssl

import trio

RECEIVE_SIZE = 65536


class ServerTLS(trio.abc.Stream):
    """A TLS server connection on ``transport`` (a trio SocketStream)."""

    def __init__(self, transport: trio.SocketStream, context: ssl.SSLContext) -> None:
        self.transport_stream = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._broken = False

    def getpeercert(self, binary_form: bool = True) -> bytes | None:
        der = self._ssl.getpeercert(binary_form=True)
        return der if binary_form else None

    async def do_handshake(self) -> None:
        """Complete the handshake; TLS failures raise ``trio.BrokenResourceError`` from the ssl error."""
        while True:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
                continue
            except ssl.SSLError as exc:
                try:  # the client learns why (an alert), as far as the socket takes it now
                    await self._flush()
                except trio.BrokenResourceError:
                    pass
                raise trio.BrokenResourceError(f"TLS handshake failed: {exc}") from exc
            if self._ssl.version() != "TLSv1.3":
                await self._flush()
            # else: what OpenSSL wrote on completing a TLS 1.3 handshake is session tickets; they leave with
            # the first write (the HTTP answer), as trio's SSLStream does (openssl/openssl#7948)
            return

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Plaintext: everything already decrypted, else what the next socket read brings; ``b""`` at EOF."""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._ssl.read(max_bytes or RECEIVE_SIZE)
            except ssl.SSLWantReadError:
                if chunks:
                    return b"".join(chunks)
                await self._fill()
                continue
            except ssl.SSLZeroReturnError:  # the peer's close_notify
                return b"".join(chunks)
            except ssl.SSLError as exc:
                if chunks:
                    return b"".join(chunks)
                if isinstance(exc, ssl.SSLEOFError):
                    return b""  # the peer closed without close_notify: end of stream all the same
                raise trio.BrokenResourceError(f"TLS error: {exc}") from exc
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` and write it (with any records waiting) in one socket write. One writer at a time."""
        try:
            self._ssl.write(data)
        except ssl.SSLError as exc:
            raise trio.BrokenResourceError(f"TLS error: {exc}") from exc
        await self._flush()

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        try:
            try:
                self._ssl.unwrap()  # queues close_notify
            except (ssl.SSLWantReadError, ssl.SSLError):
                pass
            with trio.move_on_after(0.5):
                await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await self.transport_stream.aclose()

    async def _flush(self) -> None:
        if self._broken:
            raise trio.BrokenResourceError("an earlier write was interrupted: the TLS stream is unusable")
        if self._outgoing.pending:
            try:
                await self.transport_stream.send_all(self._outgoing.read())
            except BaseException:
                # cancelled or failed part-way: what reached the peer is unknown, so no record may follow
                self._broken = True
                raise

    async def _fill(self) -> None:
        data = await self.transport_stream.receive_some(RECEIVE_SIZE)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()
