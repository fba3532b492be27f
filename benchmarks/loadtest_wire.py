"""A loopback proxy between the load test's browsers and the server that clocks the server's own time to first chart.

Each browser tab talks to the server over one websocket (``/_stcore/stream``). The proxy passes every byte through
unchanged and notes, per websocket (wall clock, ``time.time()``):

    request_at   the tab's first message to the server (its ``rerun`` request, carrying the link's query string;
                 the first FIRST_FRAMES payloads are kept as ``first``): the browser has loaded the app and asks
                 for the page
    chart_at     the first server message carrying the gradient-norm chart (``MARKER`` in the figure's JSON)

``chart_at - request_at`` is the server's time to first chart, whatever the browser does before (loading the app) and
after (drawing it): on one small machine the browsers compete with the server for the cores, and a visitor's own
browser would not. Streamlit sends websocket frames uncompressed (server.enableWebsocketCompression is off by
default) and a server's frames unmasked, so the marker is found in the byte stream as sent; a browser's frames are
masked (RFC 6455 section 5.3) and are unmasked here to read the first one.
"""
from __future__ import annotations

import socket
import threading
import time

MARKER = b'"grad_norm"'  # the gradient-norm figure's meta (figure / trace role) in its plotly JSON
STREAM = b"/_stcore/stream"
FIRST_FRAMES = 3  # the browser's first frames kept (the rerun request is the first)


def _first_frame(buf: bytes) -> tuple[bytes, int] | None:
    """The unmasked payload of the first complete frame in ``buf`` and the bytes it took (None if incomplete)."""
    if len(buf) < 2:
        return None
    n, at = buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, at = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, at = int.from_bytes(buf[2:10], "big"), 10
    masked = buf[1] & 0x80
    key = buf[at:at + 4] if masked else b"\0\0\0\0"
    at += 4 if masked else 0
    if len(buf) < at + n:
        return None
    # payload_i = masked_i XOR key_(i mod 4)
    return bytes(b ^ key[i % 4] for i, b in enumerate(buf[at:at + n])), at + n


class Wire:
    """``Wire(port)``: listens on 127.0.0.1 (``url``), forwards to 127.0.0.1:``port``; ``sockets`` holds one record
    per websocket: {"request_at", "first", "chart_at"}."""

    def __init__(self, port: int):
        self.target = ("127.0.0.1", port)
        self.sockets: list[dict] = []
        self._lock = threading.Lock()
        self._listen = socket.socket()
        self._listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listen.bind(("127.0.0.1", 0))
        self._listen.listen(256)
        self.url = f"http://127.0.0.1:{self._listen.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listen.accept()
            except OSError:  # closed
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            rec: dict = {}
            threading.Thread(target=self._up, args=(client, server, rec), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, rec), daemon=True).start()

    def _up(self, src: socket.socket, dst: socket.socket, rec: dict) -> None:
        """Browser -> server: note a websocket's request and its first frame."""
        head, buf, state = b"", b"", "head"
        try:
            while data := src.recv(65536):
                if state == "head":
                    head += data
                    if b"\r\n\r\n" in head:
                        first_line = head.split(b"\r\n", 1)[0]
                        state = "ws" if STREAM in first_line and b"upgrade: websocket" in head.lower() else "http"
                        buf = head.split(b"\r\n\r\n", 1)[1] if state == "ws" else b""
                        if state == "ws":
                            rec["ws"] = True
                            with self._lock:
                                self.sockets.append(rec)
                elif state == "ws" and rec.get("frames", 0) < FIRST_FRAMES:
                    buf += data
                while state == "ws" and rec.get("frames", 0) < FIRST_FRAMES and (got := _first_frame(buf)):
                    rec.setdefault("request_at", time.time())  # noted before it is passed on
                    rec["first"] = rec.get("first", b"") + got[0]
                    rec["frames"], buf = rec.get("frames", 0) + 1, buf[got[1]:]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shut(dst)

    def _down(self, src: socket.socket, dst: socket.socket, rec: dict) -> None:
        """Server -> browser: note when the chart first passes on a websocket."""
        tail = b""
        try:
            while data := src.recv(65536):
                if rec.get("ws") and "chart_at" not in rec:  # noted before it is passed on
                    if MARKER in tail + data:
                        rec["chart_at"] = time.time()
                    tail = data[-len(MARKER):]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shut(dst)

    def find(self, query: str) -> dict | None:
        """The first websocket whose first message carries ``query`` (a link's query string)."""
        q = query.encode()
        with self._lock:
            return next((r for r in self.sockets if q in r.get("first", b"")), None)

    def close(self) -> None:
        self._listen.close()


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
