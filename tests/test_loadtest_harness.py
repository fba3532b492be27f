"""The load test's harness (no browser, no server): the browsers' priority, their CPU seconds, the websocket
proxy's clock and the timelines it gives (benchmarks/loadtest_browser.py, loadtest_wire.py, loadtest_door.py)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from benchmarks import loadtest_browser as lb
from benchmarks import loadtest_door as ld
from benchmarks import loadtest_wire as lw

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness and /proc are Linux's")


# ---- the browsers' priority and CPU -------------------------------------------------------------------------
@linux
def test_the_launcher_starts_its_program_at_niceness_19_unable_to_raise_it(tmp_path):
    probe = tmp_path / "probe"
    probe.write_text(f"#!{sys.executable}\nimport os\nprint(os.nice(0))\ntry:\n    os.setpriority(os.PRIO_PROCESS, 0, -1)\n"
                     "    print('raised')\nexcept OSError:\n    print('refused')\n")
    probe.chmod(0o755)
    for niceness in (19, 0):
        out = subprocess.run([lb.launcher(str(tmp_path), niceness, chromium=str(probe))], capture_output=True,
                             text=True).stdout.split()
        assert out == [str(niceness), "refused"]  # as root too: CAP_SYS_NICE is dropped (Chromium sets -8 with it)


@linux
def test_tree_cpu_seconds_counts_the_descendants_but_the_skipped_tree_and_census_sees_their_threads():
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\nprint('done', flush=True)\n" \
           "import sys; sys.stdin.read()"
    busy = subprocess.Popen([sys.executable, "-c", spin], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    skipped = subprocess.Popen([sys.executable, "-c", spin], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert busy.stdout.readline() == "done\n" and skipped.stdout.readline() == "done\n"
        me = os.getpid()
        assert {busy.pid, skipped.pid} <= set(lb.descendants(me)) and skipped.pid not in lb.descendants(me, skipped.pid)
        both, one = lb.tree_cpu_seconds(me), lb.tree_cpu_seconds(me, skip=skipped.pid)
        assert one >= 0.35 and both >= one + 0.35  # each spun 0.4 CPU s (clock ticks: 0.01 s)
        assert sum(lb.census([busy.pid]).values()) >= 1 and set(lb.census([busy.pid])) == {os.nice(0)}
    finally:
        for p in (busy, skipped):
            p.stdin.close()
            p.wait(10)


# ---- the websocket proxy ------------------------------------------------------------------------------------
def test_a_client_frame_is_unmasked_as_rfc_6455_shows():
    # RFC 6455 section 5.7: a masked text frame "Hello"
    frame = bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
    assert lw._first_frame(frame) == (b"Hello", 11)
    assert lw._first_frame(frame[:7]) is None  # incomplete
    long = bytes([0x82, 0x80 | 126]) + (300).to_bytes(2, "big") + b"\0\0\0\0" + b"x" * 300  # 16-bit length, key 0
    assert lw._first_frame(long + b"next") == (b"x" * 300, 308)


def _fake_server(marker_after: float) -> tuple[socket.socket, list]:
    """A one-connection server: answers an upgrade with 101, reads a frame, sends a frame holding MARKER."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = []

    def serve():
        conn, _ = srv.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        rest = data.split(b"\r\n\r\n", 1)[1]
        while len(rest) < 2 + 4 + 20:
            rest += conn.recv(4096)
        got.append(rest)
        time.sleep(marker_after)
        payload = b'{"meta": {"figure": "grad_norm"}}'
        conn.sendall(bytes([0x82, len(payload)]) + payload)
        conn.recv(10)
        conn.close()
    threading.Thread(target=serve, daemon=True).start()
    return srv, got


def test_the_proxy_passes_bytes_unchanged_and_clocks_the_request_and_the_chart():
    srv, got = _fake_server(0.2)
    wire = lw.Wire(srv.getsockname()[1])
    try:
        port = int(wire.url.rsplit(":", 1)[1])
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"GET /_stcore/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        assert c.recv(4096).startswith(b"HTTP/1.1 101")
        query = b"seq_len=3000&seed=7!"  # 20 bytes
        key = b"\x01\x02\x03\x04"
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(query))
        sent = bytes([0x82, 0x80 | len(query)]) + key + masked
        c.sendall(sent)
        reply = b""
        while b"grad_norm" not in reply:
            reply += c.recv(4096)
        c.sendall(b"bye")
        c.close()
        assert got == [sent]  # the frame reached the server as the browser sent it
        rec = wire.find("seq_len=3000&seed=7")
        assert rec is not None and rec["first"] == query and rec["chart_at"] - rec["request_at"] >= 0.2
        assert wire.find("seed=8") is None
    finally:
        wire.close()
        srv.close()


# ---- the timelines ------------------------------------------------------------------------------------------
class FakeWire:
    def __init__(self, rec):
        self.rec = rec

    def find(self, query):
        return self.rec if query == "seed=4242" else None


def test_a_pages_time_is_split_into_its_steps_from_the_door_log_and_the_proxy():
    from analysis.limits import GFLOP_PER_S, estimate
    est = round(estimate(ld.page_config({"seed": "4242"}), only="gradients").flops / (GFLOP_PER_S * 1e9), 3)
    t0 = 1000.0
    rec = {"cls": "plain", "params": {"seed": "4242"}, "opened_at": t0, "first_s": 9.0}
    lines = [{"kind": "interactive", "est_s": est + 1.0, "queued_at": t0 + 2.5, "waited_s": 0.0, "held_s": 1.0},
             {"kind": "background", "est_s": est, "queued_at": t0 + 2.5, "waited_s": 0.0, "held_s": 1.0},
             {"kind": "interactive", "est_s": est, "queued_at": t0 + 2.5, "waited_s": 1.5, "held_s": 0.5}]
    ld.timelines([rec], lines, FakeWire({"request_at": t0 + 2.0, "chart_at": t0 + 5.0}))
    assert rec["load_s"] == 2.0 and rec["to_door_s"] == 0.5 and rec["waited_s"] == 1.5 and rec["held_s"] == 0.5
    assert rec["sent_s"] == 0.5 and rec["drawn_s"] == 4.0 and rec["server_s"] == 3.0
    assert sum(rec[k] for k in ld.STEPS) == pytest.approx(rec["first_s"])  # the steps add up to the browser's clock
    (row,) = ld.timeline_rows([rec])
    assert row["n"] == 1 and row["held_s"] == (0.5, 0.5) and row["drawn_s"] == (4.0, 4.0)
    late = {"cls": "plain", "params": {"seed": "4242"}, "opened_at": t0}  # its browser never drew the chart
    ld.timelines([late], lines, FakeWire({"request_at": t0 + 2.0, "chart_at": t0 + 5.0}))
    assert late["server_s"] == 3.0 and "drawn_s" not in late


def test_correctness_reads_the_chart_in_norms_or_in_exact_log10():
    """A heavy link's line lies below float64's range (10^-400 is 0.0 as a float): its page draws exact log10 values
    (the trace's meta says log10) and is checked against the engine's exact log10, else against the norms."""
    from benchmarks.loadtest import close
    want = {"norm": [0.0, 0.1, 1.0], "log10": [-400.25, -1.0, 0.0]}
    assert close({"y": [-400.25, -1.0, 0.0], "log10": True}, want)
    assert not close({"y": [-400.25, -1.0, 0.0], "log10": False}, want)  # the same numbers read as norms
    assert close({"y": [0.0, 0.1, 1.0], "log10": False}, want)
    assert not close({"y": [-400.0, -1.0, 0.0], "log10": True}, want)
    assert not close(None, want) and not close({"y": [0.1]}, want)
