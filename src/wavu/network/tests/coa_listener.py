"""A test router for CoA and Disconnect-Requests: a real UDP listener on 127.0.0.1 that checks each
request's authenticator and Message-Authenticator with the router's secret, records what it got,
and answers as told (ACK, NAK with an Error-Cause, or nothing)."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

from wavu.network.dictionary import dictionary


@dataclass
class Received:
    code: int
    attributes: dict
    authentic: bool  # Request Authenticator and Message-Authenticator both right


@dataclass
class FakeRouter:
    """Answers: `answers` maps a request code (40 Disconnect, 43 CoA) to "ack", "nak" or "silent"."""

    secret: str
    answers: dict = field(default_factory=lambda: {40: "ack", 43: "ack"})
    error_cause: int = 503
    received: list[Received] = field(default_factory=list)
    port: int = 0

    def serve(self, sock: socket.socket, stop: threading.Event) -> None:
        from pyrad import packet

        while not stop.is_set():
            try:
                raw, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            request = packet.CoAPacket(packet=raw, secret=self.secret.encode(), dict=dictionary())
            authentic = (
                request.VerifyCoARequest()
                and request.message_authenticator
                and (request.verify_message_authenticator())
            )
            values = {}
            for key in request.keys():  # noqa: SIM118 - pyrad's keys() gives names
                if key == "Message-Authenticator":
                    continue
                found = request[key]
                values[key] = found[0] if len(found) == 1 else list(found)
            self.received.append(Received(request.code, values, bool(authentic)))
            answer = self.answers.get(request.code, "ack")
            if answer == "silent" or not authentic:
                continue
            reply = request.CreateReply()
            if answer == "nak":
                reply.code = request.code + 2  # CoA-NAK 45, Disconnect-NAK 42
                reply["Error-Cause"] = self.error_cause
            reply.add_message_authenticator()
            sock.sendto(reply.ReplyPacket(), peer)


@contextlib.contextmanager
def listening_nas(secret: str, **options):
    """A `FakeRouter` listening on a free UDP port of 127.0.0.1 until the block ends."""
    nas = FakeRouter(secret=secret, **options)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    nas.port = sock.getsockname()[1]
    stop = threading.Event()
    thread = threading.Thread(target=nas.serve, args=(sock, stop), daemon=True)
    thread.start()
    try:
        yield nas
    finally:
        stop.set()
        thread.join(2)
        sock.close()
