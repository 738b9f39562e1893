"""Fixtures: a simulator on an ephemeral port, a tiny callback receiver, and an HTTP helper.

No database: these tests talk HTTP to real sockets on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from wavu.mpesa_simulator import Config, SimulatorServer, State

FAST_SCRIPT = {"outcome": "success", "delay": 0.05, "callback_delay": 0.0, "copies": 1, "copy_interval": 0.02}


def fast_config(**changes: Any) -> Config:
    config = Config(validation_timeout=0.5, no_callback_pending=0.3, callback_timeout=2.0)
    config.default_script = dict(FAST_SCRIPT)
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None):
    """(status, parsed JSON answer)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None and "Content-Type" not in (headers or {}):
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Receiver:
    """Records every POST it gets; answers per path with a scripted status/body/delay."""

    def __init__(self):
        self.requests: list[tuple[str, Any]] = []
        self.answers: dict[str, dict[str, Any]] = {}
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.cond:
                    receiver.requests.append((self.path, json.loads(body)))
                    receiver.cond.notify_all()
                answer = receiver.answers.get(self.path, {})
                if answer.get("delay"):
                    time.sleep(answer["delay"])
                data = json.dumps(answer.get("body", {"ResultCode": 0, "ResultDesc": "Accepted"})).encode()
                try:
                    self.send_response(answer.get("status", 200))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the simulator gave up waiting
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def received(self, path: str) -> list[Any]:
        with self.cond:
            return [body for p, body in self.requests if p == path]

    def wait_for(self, path: str, count: int = 1, timeout: float = 3.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len([1 for p, _ in self.requests if p == path]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
        return self.received(path)

    def paths(self) -> list[str]:
        with self.cond:
            return [p for p, _ in self.requests]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def sim(clock):
    server = SimulatorServer(("127.0.0.1", 0), state=State(fast_config(), clock=clock)).start()
    yield server
    server.stop()


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.stop()


def get_token(sim) -> str:
    config = sim.state.config
    basic = base64.b64encode(f"{config.consumer_key}:{config.consumer_secret}".encode()).decode()
    status, body = call(
        "GET",
        sim.base_url + "/oauth/v1/generate?grant_type=client_credentials",
        headers={"Authorization": f"Basic {basic}"},
    )
    assert status == 200, body
    return body["access_token"]


class Daraja:
    """A minimal Daraja client for the tests: a token, then POSTs with it."""

    def __init__(self, sim):
        self.sim = sim
        self.token = get_token(sim)

    def post(self, path: str, body: Any = None, *, headers: dict[str, str] | None = None, raw: bytes | None = None):
        all_headers = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        return call("POST", self.sim.base_url + path, body, headers=all_headers, raw=raw)

    def password(self, shortcode: str, timestamp: str) -> str:
        return base64.b64encode(f"{shortcode}{self.sim.state.config.passkey}{timestamp}".encode()).decode()

    def stk_body(self, callback_url: str, *, phone: str = "254708374149", amount: Any = 10, **changes: Any):
        timestamp = datetime.now().strftime("%Y%m%d%H%M%S")
        body = {
            "BusinessShortCode": "174379",
            "Password": self.password("174379", timestamp),
            "Timestamp": timestamp,
            "TransactionType": "CustomerPayBillOnline",
            "Amount": amount,
            "PartyA": phone,
            "PartyB": "174379",
            "PhoneNumber": phone,
            "CallBackURL": callback_url,
            "AccountReference": "WV100234",
            "TransactionDesc": "Internet",
        }
        body.update(changes)
        return body

    def stk_push(self, callback_url: str, *, headers: dict[str, str] | None = None, **kwargs: Any):
        return self.post("/mpesa/stkpush/v1/processrequest", self.stk_body(callback_url, **kwargs), headers=headers)

    def stk_query(self, checkout_id: str, shortcode: str = "174379"):
        timestamp = datetime.now().strftime("%Y%m%d%H%M%S")
        body = {
            "BusinessShortCode": shortcode,
            "Password": self.password(shortcode, timestamp),
            "Timestamp": timestamp,
            "CheckoutRequestID": checkout_id,
        }
        return self.post("/mpesa/stkpushquery/v1/query", body)


@pytest.fixture
def daraja(sim):
    return Daraja(sim)


def wait_until(predicate, timeout: float = 3.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
