"""Rendering figures to PNG/SVG/PDF with kaleido 1.x in a headless Chromium, on a 16:9 1920x1080 slide.

    export_available()          (True, "") or (False, the one-line install hint); starts nothing
    slide_figure(fig)           a copy of fig laid out for a slide (analysis.figures.slide_layout)
    figure_bytes(fig, fmt)      one figure as PNG (1920x1080 pixels), SVG or PDF
    render(jobs, scale, on_done) many (figure dict, format) jobs, in batches of RENDER_TABS, with progress
    png_size(data)              (width, height) of a PNG

PNG, SVG and PDF all need a Chromium binary (``BROWSER_PATH``, ``/usr/bin/chromium``, ``chromium`` on PATH, or
kaleido's own lookup); without one ``ExportUnavailable`` says how to install it; nothing silently falls back.
The first render starts kaleido's sync server once (one browser with two tabs, MathJax disabled: it would be
fetched from the internet) and every later render reuses it: about 0.3-1 s per image instead of 2-8 s for a
fresh browser. Renders are serialized by a lock, so Streamlit sessions may render from several threads; the
server's thread is watched, so a browser that fails to start or crashes raises ExportUnavailable instead of
hanging the caller.
"""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
import threading
import time

import plotly.graph_objects as go

BROWSER_FORMATS = ("png", "svg", "pdf")
SLIDE_WIDTH, SLIDE_HEIGHT = 1920, 1080
RENDER_TIMEOUT_S = 180.0
RENDER_TABS = 2  # browser tabs of the kaleido server: a batch (export_all, view_zip) renders two at a time

INSTALL_HINT = ("PNG/SVG/PDF export needs Chromium: install it with apt-get install -y chromium (Debian/Ubuntu) "
                "or set BROWSER_PATH to a Chrome/Chromium binary; CSV/JSON export works without it")

# names tried on PATH, in order, after BROWSER_PATH and /usr/bin/chromium
_BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_DEFAULT_BROWSER = "/usr/bin/chromium"


class ExportUnavailable(RuntimeError):
    """A static format cannot be produced here; the message says what is missing and how to install it."""


# ---- browser lookup ----------------------------------------------------------------------------------------
def _is_exe(path: str | None) -> bool:
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


def _find_browser() -> str | None:
    """The Chromium binary kaleido will use, or None. Cheap: looks at files, starts nothing.

    ``BROWSER_PATH`` when set (and only it: a wrong BROWSER_PATH is reported, not silently bypassed), then
    /usr/bin/chromium, then the usual names on PATH, then kaleido's (choreographer's) own lookup, which also
    finds a browser downloaded with ``kaleido_get_chrome``.
    """
    env = os.environ.get("BROWSER_PATH")
    if env:
        return env if _is_exe(env) else None
    if _is_exe(_DEFAULT_BROWSER):
        return _DEFAULT_BROWSER
    for name in _BROWSER_NAMES:
        p = shutil.which(name)
        if _is_exe(p):
            return p
    try:
        from choreographer.browsers.chromium import Chromium
        p = Chromium.find_browser(skip_local=False)
    except Exception:  # noqa: BLE001 - kaleido's lookup is best effort; None means "not found"
        return None
    return p if _is_exe(p) else None


def _missing_hint() -> str:
    env = os.environ.get("BROWSER_PATH")
    if env and not _is_exe(env):
        return f"BROWSER_PATH={env!r} is not an executable file; " + INSTALL_HINT
    return INSTALL_HINT


def export_available() -> tuple[bool, str]:
    """(True, "") when PNG/SVG/PDF can be rendered here, else (False, the one-line install hint)."""
    if _find_browser():
        return True, ""
    return False, _missing_hint()


# ---- rendering ---------------------------------------------------------------------------------------------
_LOCK = threading.Lock()


def _server():
    import kaleido
    return getattr(kaleido, "_global_server", None)


def _server_thread_dead() -> bool:
    t = getattr(_server(), "_thread", None)
    return t is not None and not t.is_alive()


def _ensure_server(browser: str) -> None:
    """Start kaleido's sync server once (MathJax off, our browser); restart it if its thread died."""
    import kaleido
    srv = _server()
    if srv is not None and srv.is_running():
        if not _server_thread_dead():
            return
        kaleido.stop_sync_server(silence_warnings=True)
    kaleido.start_sync_server(mathjax=False, path=browser, n=RENDER_TABS, silence_warnings=True)


def _watched(call, timeout: float):
    """``call()`` on kaleido's sync server, which blocks forever once the server's thread died (a browser
    that did not start or crashed): it runs in a helper thread while this one watches the server."""
    import kaleido
    box: dict = {}
    done = threading.Event()

    def work():
        try:
            box["out"] = call()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["err"] = e
        finally:
            done.set()

    threading.Thread(target=work, name="analysis-export-render", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not done.wait(0.05):
        if _server_thread_dead():
            kaleido.stop_sync_server(silence_warnings=True)  # the next call starts a fresh one
            raise ExportUnavailable("Chromium did not start or crashed while rendering (see the log above); "
                                    "check that it runs headless, or reinstall it: apt-get install -y chromium")
        if time.monotonic() > deadline:
            raise ExportUnavailable(f"Chromium did not answer within {timeout:.0f} s; PNG/SVG/PDF export is "
                                    "unavailable until the process restarts")
    if "err" in box:
        e = box["err"]
        raise RuntimeError(f"kaleido could not render the figure: {type(e).__name__}: "
                           f"{' '.join(str(e).split())}") from e
    return box["out"]


def _opts(fmt: str, scale: float = 1) -> dict:
    return {"format": fmt, "width": SLIDE_WIDTH, "height": SLIDE_HEIGHT, "scale": scale}


def _render_batch(kaleido, jobs: list[tuple[dict, str]], scale: float) -> list[bytes]:
    """One ``write_fig_from_object`` call (the server's tabs render the jobs concurrently) into a temporary
    folder; the caller holds the lock and started the server."""
    with tempfile.TemporaryDirectory(prefix="analysis-export-") as d:
        objs = [{"fig": spec, "path": os.path.join(d, f"{i}.{fmt}"), "opts": _opts(fmt, scale)}
                for i, (spec, fmt) in enumerate(jobs)]
        _watched(lambda: kaleido.write_fig_from_object_sync(objs, cancel_on_error=True),
                 RENDER_TIMEOUT_S + 20.0 * len(jobs))
        out = []
        for o in objs:
            with open(o["path"], "rb") as fh:
                out.append(fh.read())
        return out


def render(jobs: list[tuple[dict, str]], *, scale: float = 1, on_done=None) -> list[bytes]:
    """Render (figure dict, format) jobs at ``SLIDE_WIDTH*scale x SLIDE_HEIGHT*scale`` pixels (PNG).

    One job by ``calc_fig``; several in batches of ``RENDER_TABS`` (the server's tabs render a batch
    concurrently), calling ``on_done(done, total)`` after each batch when given.
    """
    import kaleido
    browser = _find_browser()
    if browser is None:
        raise ExportUnavailable(_missing_hint())
    out: list[bytes] = []
    with _LOCK:
        _ensure_server(browser)
        if len(jobs) == 1:
            spec, fmt = jobs[0]
            out = [bytes(_watched(lambda: kaleido.calc_fig_sync(spec, opts=_opts(fmt, scale)), RENDER_TIMEOUT_S))]
        else:
            for i in range(0, len(jobs), RENDER_TABS):
                out += _render_batch(kaleido, jobs[i:i + RENDER_TABS], scale)
                if on_done is not None:
                    on_done(len(out), len(jobs))
    if on_done is not None and len(jobs) == 1:
        on_done(1, 1)
    return out


def slide_figure(fig: go.Figure) -> go.Figure:
    """A copy of ``fig`` on a 16:9 1920x1080 slide (``analysis.figures.slide_layout``); ``fig`` is untouched."""
    from ..figures import slide_layout
    return slide_layout(fig)


def figure_bytes(fig: go.Figure, fmt: str) -> bytes:
    """``fig`` as PNG (exactly 1920x1080 pixels), SVG or PDF, on a slide layout applied to a copy.

    Raises ValueError for another ``fmt`` and ExportUnavailable when no Chromium is installed.
    """
    if fmt not in BROWSER_FORMATS:
        raise ValueError(f"fmt={fmt!r} is not an image format: choose {', '.join(BROWSER_FORMATS)} "
                         "(figure_csv / figure_json give the data)")
    if _find_browser() is None:
        raise ExportUnavailable(_missing_hint())
    return render([(slide_figure(fig).to_dict(), fmt)])[0]  # the dict built here, not in the server's thread


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])
