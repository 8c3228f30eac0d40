"""A TCP proxy between a client and PostgreSQL that can cut connections (fault injection)."""
from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to the server of ``dsn``.

    ``cut_on_next_response()``: the next bytes the server sends to any client are thrown away
    and that client's connection is closed, so a statement the server completed (committed)
    looks, to the client, like a lost connection.
    """

    def __init__(self, dsn: str):
        parts = urlsplit(dsn)
        self._target = (parts.hostname, parts.port)
        self._dsn_parts = parts
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._cut_on_next_response = False
        self.responses_dropped = 0
        self.port = 0

    async def start(self) -> "CuttingProxy":
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def dsn(self) -> str:
        parts = self._dsn_parts
        credentials = parts.netloc.rpartition("@")[0]
        return urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{self.port}"))

    def cut_on_next_response(self) -> None:
        self._cut_on_next_response = True

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            await self._forward(client_reader, client_writer)
        finally:
            self._handlers.discard(handler)

    async def _forward(self, client_reader: asyncio.StreamReader,
                       client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self._target)
        except OSError:
            client_writer.close()
            return
        pair = (client_writer, server_writer)
        self._writers.update(pair)
        await asyncio.gather(self._pipe(client_reader, server_writer, pair, upstream=True),
                             self._pipe(server_reader, client_writer, pair, upstream=False),
                             return_exceptions=True)
        self._writers.difference_update(pair)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter], *, upstream: bool) -> None:
        try:
            while data := await reader.read(1 << 16):
                if not upstream and self._cut_on_next_response:
                    self._cut_on_next_response = False
                    self.responses_dropped += 1
                    break
                writer.write(data)
                await writer.drain()
        finally:
            for each in pair:
                each.close()
