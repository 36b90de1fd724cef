"""An in-test model container speaking the SageMaker contract, with faults to inject.

    with ContractServer() as server:                 # every record scores 0.7
        config = {... "candidate": {"model": server.url}}
    with ContractServer(fault=lambda call: "http_500" if call.number == 2 else None) as server: ...

GET /ping answers 200; POST /invocations answers one record per input record in the Accept
format (CSV rows -> `0.7` lines, JSON Lines -> `{"score": 0.7}` lines, a JSON document with
`instances` -> `{"predictions": [...]}`). A fault hook picks, per call, one of FAULTS.
Binds 127.0.0.1 only and runs in a daemon thread: starting one costs milliseconds.
"""
from __future__ import annotations

import dataclasses
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable

FAULTS = ("http_500", "sleep", "truncated", "short", "garbage", "die")
SCORE = "0.7"


@dataclasses.dataclass(frozen=True)
class Call:
    number: int
    """1-based count of POST /invocations received, across threads."""
    body: bytes
    content_type: str


class ContractServer:
    def __init__(self, fault: Callable[[Call], str | None] | None = None, sleep_s: float = 3.0,
                 rewrite: Callable[[bytes, str], bytes] | None = None):
        self.fault, self.sleep_s = fault or (lambda call: None), sleep_s
        self.rewrite = rewrite
        """Changes every answer (body, content type) -> body: for a candidate that is wrong, not failing."""
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                if self.path == "/ping":
                    self._send(200, b"", "text/plain")
                else:
                    self._send(404, b"", "text/plain")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with owner._lock:
                    call = Call(len(owner.calls) + 1, body, self.headers.get("Content-Type") or "")
                    owner.calls.append(call)
                fault = owner.fault(call)
                accept = self.headers.get("Accept") or call.content_type
                answer, kind = _answer(body, call.content_type, accept)
                if owner.rewrite is not None:
                    answer = owner.rewrite(answer, kind)
                if fault == "http_500":
                    return self._send(500, b"model exploded", "text/plain")
                if fault == "sleep":
                    time.sleep(owner.sleep_s)
                elif fault == "short":
                    answer = b"".join(answer.splitlines(keepends=True)[:-1]) or b"\n"
                elif fault == "garbage":
                    answer = b"\n".join(b"not-a-number" for _ in answer.splitlines()) + b"\n"
                elif fault == "truncated":  # promise more than is sent, then hang up
                    self.send_response(200)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(answer) + 100))
                    self.end_headers()
                    self.wfile.write(answer[: len(answer) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return None
                elif fault == "die":
                    threading.Thread(target=owner.stop, daemon=True).start()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return None
                self._send(200, answer, kind)
                return None

            def _send(self, status, body, kind):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._stopped = False

    def __enter__(self) -> ContractServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop listening (a dead container); later connections are refused."""
        if not self._stopped:
            self._stopped = True
            self._server.shutdown()
            self._server.server_close()

    @property
    def invocations(self) -> int:
        return len(self.calls)


def _answer(body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
    """One answer per record: CSV lines, JSON Lines, or a predictions document."""
    text = body.decode("utf-8", "replace")
    kind = (accept or content_type).split(";")[0].strip()
    if "csv" in content_type:
        rows = [line for line in text.split("\n") if line.strip()]
        return "".join(f"{SCORE}\n" for _ in rows).encode(), "text/csv"
    if "jsonlines" in content_type:
        rows = [line for line in text.split("\n") if line.strip()]
        return "".join(f'{{"score": {SCORE}}}\n' for _ in rows).encode(), "application/jsonlines"
    if "json" in content_type:
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            return b'{"error": "bad json"}', "application/json"
        count = len(document["instances"]) if isinstance(document, dict) and "instances" in document else 1
        return json.dumps({"predictions": [{"score": float(SCORE)}] * count}).encode(), "application/json"
    return SCORE.encode(), kind or "text/plain"
