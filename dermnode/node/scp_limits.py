"""Connection hygiene for the SCP: stalled, oversized and too many connections are cut off.

pynetdicom reads each PDU with blocking ``recv`` calls on a socket without a timeout, and only
looks at its ARTIM and idle timers between PDUs: a peer that sends half a PDU and stalls holds
its thread (and an association slot) for ever, and a PDU length field of 4 GB is buffered as it
streams. Here:

- :class:`LimitedSocket` reads a PDU with a timeout of ``network_timeout`` between chunks and a
  deadline for the whole PDU (``network_timeout`` plus 1 s per 64 KiB); a PDU whose length field
  exceeds ``max_pdu_bytes`` gets an A-ABORT and the connection is closed before any of its body is
  read. To pynetdicom either looks like the peer closing the connection (Evt17).
- :class:`LimitedServer` refuses (closes) a new connection when ``max_associations`` are open, or
  ``max_associations_per_peer`` from the same address; TLS handshakes happen in the
  connection's own thread under the same timeouts, never in the accept loop.
- :class:`TolerantStateMachine` drops an event that is invalid in the current state (a peer that
  breaks the protocol while the node answers, e.g. a PDU before the A-ASSOCIATE-AC) instead of
  letting pynetdicom's reactor thread die on it; the connection is being aborted anyway.
- ARTIM (``acse_timeout``, a connection that never sends an A-ASSOCIATE-RQ) and the idle timeout
  of an established association (``network_timeout``) are pynetdicom's own, set on the AE.

Every cut and refusal is reported to ``on_refused(address, reason)`` (the receiver audits it).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

from pynetdicom import AE
from pynetdicom.fsm import TRANSITION_TABLE, StateMachine
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from dermnode.node.settings import Settings

log = logging.getLogger("dermnode.receive")

#: A PDU may take network_timeout plus one second per this many bytes to arrive.
MIN_BYTES_PER_SECOND = 64 * 1024
_CHUNK = 64 * 1024
#: A-ABORT source "service provider", reason "invalid PDU parameter value" (PS3.8 9.3.8).
_ABORT_SOURCE, _ABORT_INVALID_PARAMETER = 0x02, 0x06

OnRefused = Callable[[str, str], None]


@dataclass(frozen=True)
class Limits:
    acse_timeout: float
    network_timeout: float
    max_pdu_bytes: int
    max_associations: int
    max_per_peer: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.acse_timeout_seconds, settings.network_timeout_seconds, settings.max_pdu_bytes,
                   settings.max_associations, settings.max_associations_per_peer)

    def apply(self, ae: AE) -> None:
        """pynetdicom's own timers and limits: ARTIM, idle association, DIMSE, slots, PDU size."""
        ae.acse_timeout = self.acse_timeout
        ae.network_timeout = self.network_timeout
        ae.dimse_timeout = self.network_timeout
        ae.maximum_associations = self.max_associations
        ae.maximum_pdu_size = self.max_pdu_bytes


class LimitedSocket(AssociationSocket):
    """An AssociationSocket whose reads time out and refuse PDUs longer than the limit."""

    limits: Limits
    on_refused: OnRefused
    #: The peer closed the connection or was cut off: the association's thread only waits out its
    #: timers now and no longer counts as an open connection.
    gone: bool

    @classmethod
    def adopt(cls, sock: AssociationSocket, limits: Limits, on_refused: OnRefused) -> None:
        """Give a socket pynetdicom has just made (its connection event already queued) this read path."""
        sock.__class__ = cls
        sock.limits = limits  # type: ignore[attr-defined]
        sock.on_refused = on_refused  # type: ignore[attr-defined]
        sock.gone = False  # type: ignore[attr-defined]

    def recv(self, nr_bytes: int) -> bytearray:
        """Read ``nr_bytes`` (a PDU header or body); fewer when the peer closed or was cut off."""
        data = bytearray()
        raw = self.socket
        if raw is None or self.gone:
            return data
        if nr_bytes > self.limits.max_pdu_bytes:
            self._cut(raw, f"PDU of {nr_bytes} bytes is longer than the limit of {self.limits.max_pdu_bytes}",
                      abort=True)
            return data
        start = time.monotonic()
        deadline = start + self.limits.network_timeout + nr_bytes / MIN_BYTES_PER_SECOND
        while len(data) < nr_bytes:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                raw.settimeout(min(self.limits.network_timeout, left))
                chunk = raw.recv(min(_CHUNK, nr_bytes - len(data)))
            except TimeoutError:
                self._cut(raw, f"stalled mid-PDU: {len(data)} of {nr_bytes} bytes in {time.monotonic() - start:.0f} s")
                return data
            except OSError:
                chunk = b""  # reset by the peer: like a close
            if not chunk:
                self.gone = True
                return data
            data.extend(chunk)
        return data

    def _cut(self, raw: socket.socket, reason: str, abort: bool = False) -> None:
        self.gone = True
        address = self.assoc.requestor.address
        log.warning("closing the connection from %s: %s", address, reason)
        try:
            if abort:
                pdu = A_ABORT_RQ()
                pdu.source, pdu.reason_diagnostic = _ABORT_SOURCE, _ABORT_INVALID_PARAMETER
                raw.settimeout(1.0)
                raw.sendall(pdu.encode())
            raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the peer is gone already
        self.on_refused(address, reason)


#: Events from the node's own side (PS3.8 9.2): a primitive the association thread queued.
_LOCAL_EVENTS = {"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"}


class TolerantStateMachine(StateMachine):
    """A state machine that drops events invalid in its state rather than raising in the reactor.

    pynetdicom raises InvalidEventError from its reactor thread, e.g. when the association thread
    answers (A-ASSOCIATE-AC, a C-STORE response) after the peer's protocol error has already put
    the connection in Sta13 (closing): the thread dies with a traceback. A dropped local event's
    primitive is taken off the queue (pynetdicom only peeks at it before the action).
    """

    @classmethod
    def adopt(cls, machine: StateMachine) -> None:
        machine.__class__ = cls

    def do_action(self, event: str) -> None:
        if (event, self.current_state) in TRANSITION_TABLE:
            super().do_action(event)
            return
        log.debug("dropping %s in state %s: the connection is closing", event, self.current_state)
        if event in _LOCAL_EVENTS:
            self.dul.to_provider_queue.get(block=False)


class LimitedRequestHandler(RequestHandler):
    server: LimitedServer

    def _create_association(self):  # noqa: ANN202 - pynetdicom's Association
        assoc = super()._create_association()
        LimitedSocket.adopt(assoc.dul.socket, self.server.limits, self.server.on_refused)
        TolerantStateMachine.adopt(assoc.dul.state_machine)
        return assoc


class LimitedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with connection limits and TLS handshakes off the accept loop."""

    def __init__(self, *args: object, limits: Limits, on_refused: OnRefused, **kwargs: object) -> None:
        self.limits = limits
        self.on_refused = on_refused
        super().__init__(*args, request_handler=LimitedRequestHandler, **kwargs)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = self.socket.accept()
        client.settimeout(self.limits.acse_timeout)
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def verify_request(self, request: object, client_address: tuple[str, int]) -> bool:
        """Refuse a connection beyond the association limits (socketserver then closes it)."""
        peer = client_address[0]
        open_now = [assoc for assoc in self.active_associations if _is_open(assoc)]
        from_peer = sum(1 for assoc in open_now if assoc.requestor.address == peer)
        if len(open_now) >= self.limits.max_associations:
            reason = f"too many associations: {len(open_now)} open, limit {self.limits.max_associations}"
        elif from_peer >= self.limits.max_per_peer:
            reason = f"per-peer limit: {from_peer} open from this address, limit {self.limits.max_per_peer}"
        else:
            return True
        log.warning("refusing a connection from %s: %s", peer, reason)
        self.on_refused(peer, reason)
        return False


def _is_open(assoc: object) -> bool:
    """Whether an association thread still holds a live connection (not one waiting out its timers)."""
    sock = assoc.dul.socket  # type: ignore[attr-defined]
    return isinstance(sock, LimitedSocket) and not sock.gone and sock.socket is not None


def start_limited_server(ae: AE, address: tuple[str, int], limits: Limits, on_refused: OnRefused,
                         **server_options: object) -> LimitedServer:
    """``ae.start_server(address, block=False, ...)`` with :class:`LimitedServer` and ``limits`` applied."""
    limits.apply(ae)
    server = ae.make_server(address, server_class=LimitedServer, limits=limits, on_refused=on_refused,
                            **server_options)
    threading.Thread(target=server.serve_forever, name="AcceptorServer", daemon=True).start()
    ae._servers.append(server)  # as start_server does: server.shutdown() removes it
    return server
