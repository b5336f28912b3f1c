"""Slow clients: deadlines on reading a request, so that idle or trickling sockets are closed.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but sets no timer while it waits
for a request's headers (a fresh connection, or the next request on a kept-alive one after its first byte)
or for its body: a client that sends half a request line and stalls, or trickles a byte a second, holds a
connection (and a file descriptor) for ever. :class:`DeadlineH11Protocol` is uvicorn's h11 protocol plus
two deadlines:

- **headers**: from the connection's start (or the first byte of the next request on a kept-alive
  connection) until the request's headers are complete, at most ``header_timeout_s``;
- **body**: from the headers until the body is complete, at most ``body_timeout_s`` (bodies are capped by
  ``limits.max_body_bytes``, so a steady client needs a small part of that).

Past either, the server answers 408 (``{"error": ...}``, ``Connection: close``) and closes the socket; an
application still waiting for that body sees the client as gone. :func:`server_options` is what
``dreamfix serve`` hands to uvicorn (the protocol and ``timeout_keep_alive``, from ``limits``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from service.settings import LimitSettings

log = logging.getLogger(__name__)


def _body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a body deadline (class attributes, seconds)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # -------------------------------------------------------------------------- uvicorn's hooks

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._between_requests():
            self._arm_header_timer()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before and self.cycle is not None:  # a request's headers are complete
            self._cancel_timers()
            if self.cycle.more_body:
                cycle = self.cycle
                self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_late, cycle)
        elif self.cycle is not None and not self.cycle.more_body and self._body_timer is not None:
            self._body_timer.cancel()  # the body is complete
            self._body_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    # ------------------------------------------------------------------------------- deadlines

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._between_requests():
            return
        log.info("closing %s: no complete request headers within %gs", self.client, self.header_timeout_s)
        body = _body(f"request headers not complete within {self.header_timeout_s:g}s")
        # No request was parsed, so h11 cannot frame this answer; it is written as it is, then the socket closes.
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        self.transport.close()

    def _body_late(self, cycle: RequestResponseCycle) -> None:
        self._body_timer = None
        if cycle is not self.cycle or not cycle.more_body or cycle.response_started or cycle.disconnected:
            return
        if self.transport.is_closing():
            return
        log.info("closing %s: request body not complete within %gs", self.client, self.body_timeout_s)
        body = _body(f"request body not complete within {self.body_timeout_s:g}s")
        headers = [
            (b"content-type", b"application/json"),
            (b"connection", b"close"),
            (b"content-length", str(len(body)).encode()),
        ]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=408, headers=headers)) or b"")
            self.transport.write(self.conn.send(h11.Data(data=body)) or b"")
            self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            log.debug("could not frame the 408 for %s", self.client, exc_info=True)
        # The application waiting for this body now sees the client as gone, and its answer goes nowhere.
        cycle.disconnected = True
        cycle.message_event.set()
        self.transport.close()


def deadline_protocol(header_timeout_s: float, body_timeout_s: float) -> type[DeadlineH11Protocol]:
    """The protocol class with these deadlines (uvicorn builds one instance per connection)."""
    return type(
        "DeadlineH11Protocol",
        (DeadlineH11Protocol,),
        {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s},
    )


def server_options(limits: LimitSettings) -> dict[str, Any]:
    """uvicorn keyword arguments: the deadline protocol and the keep-alive timeout from ``limits``."""
    return {
        "http": deadline_protocol(limits.header_timeout_s, limits.body_timeout_s),
        "timeout_keep_alive": limits.keep_alive_s,
    }
