"""analysis.export: real PNG/SVG/PDF files (kaleido + Chromium), CSV/JSON that give back the traces' numbers,
zips and the no-browser path (export_all and the command line's ``export``: test_export_all).

Image tests need Chromium (CI installs it); without one they skip with the install hint. The kaleido server
is started once by the first render and reused by every later test of the session (module-level state in
analysis.export), which keeps the whole file well under a minute.
"""
from __future__ import annotations

import csv
import io
import json
import math
import struct
import threading
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import plotly.graph_objects as go
import pytest

from analysis import export
from analysis.config import ExperimentConfig

HAVE_BROWSER, HINT = export.export_available()
needs_browser = pytest.mark.skipif(not HAVE_BROWSER, reason=f"no Chromium here: {HINT}")
CONFIG = {"cell": "rnn", "compare": ["rnn", "lstm"], "seq_len": 12, "hidden_size": 8, "note": None}


def figures_or_skip():
    try:
        import analysis.figures as figures
    except ModuleNotFoundError as e:
        if e.name != "analysis.figures":
            raise
        pytest.skip("analysis.figures is not written yet (export_all draws its views)")
    return figures


def tiny_config(**kw) -> ExperimentConfig:
    return ExperimentConfig(seq_len=12, hidden_size=8, compare=("rnn", "lstm"), batch_size=4, **kw)


# ---- file checks --------------------------------------------------------------------------------------------
def assert_png(data: bytes, size=(1920, 1080)):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    assert struct.unpack(">II", data[16:24]) == size


def assert_svg(data: bytes):
    root = ET.fromstring(data)
    assert root.tag.rsplit("}", 1)[-1] == "svg"


def assert_pdf(data: bytes):
    assert data.startswith(b"%PDF")
    assert b"%%EOF" in data[-1024:]


CHECK = {"png": assert_png, "svg": assert_svg, "pdf": assert_pdf,
         "csv": lambda b: next(csv.reader(io.StringIO(b.decode()))),
         "json": lambda b: json.loads(b)}


def same(a, b) -> bool:
    """Exact equality of two numbers, NaN equal to NaN."""
    a, b = float(a), float(b)
    return (math.isnan(a) and math.isnan(b)) or a == b


# ---- figures built by hand ----------------------------------------------------------------------------------
def line_figure() -> go.Figure:
    t = np.arange(12)
    fig = go.Figure()
    fig.add_scatter(x=t, y=np.exp(-t / 3.0), name="rnn")
    fig.add_scatter(x=t, y=np.array([0.1, np.nan, np.inf, 1e-300, 2.5, -3, 7, 8, 9, 10, 11, 1 / 3],
                                    dtype=np.float64), name="lstm")
    fig.add_scatter(x=t.tolist(), y=(np.arange(12, dtype=np.float32) / 7).astype(np.float32), name="gru f32")
    fig.add_scatter(y=[1, 2, 3], name="rnn")  # repeated name, implicit x
    fig.add_scatter(x=[0.5], y=[2.0], name="σ<sub>max</sub>  of<br>W<sub>hh</sub>")  # HTML in the name
    fig.update_layout(title="||dL/dh_t||", yaxis_type="log", meta=dict(CONFIG))
    return fig


def heatmap_figure() -> go.Figure:
    z = np.arange(12, dtype=float).reshape(3, 4) / 3
    z[1, 2] = np.nan
    fig = go.Figure(go.Heatmap(z=z, x=[0, 10, 20, 30], y=[5, 6, 7], name="steps x t"))
    fig.add_heatmap(z=[[1.5, 2.5], [3.5, 4.5]], name="implicit")  # no x / y: 0, 1, ...
    fig.update_layout(title="heat", meta=dict(CONFIG))
    return fig


def trace_points(fig: go.Figure) -> dict[str, list[tuple]]:
    """The figure's numbers, recomputed independently of analysis.export: name -> [(x, y[, z])]."""
    out, seen = {}, set()
    for i, tr in enumerate(fig.data):
        name = (tr.name or f"trace {i}").replace("<sub>", "").replace("</sub>", "").replace("<br>", " ")
        name = " ".join(name.split())
        if name in seen:
            name = f"{name} ({i})"
        seen.add(name)
        if tr.type == "heatmap":
            z = np.asarray(tr.z, dtype=float)
            xs = list(tr.x) if tr.x is not None else list(range(z.shape[1]))
            ys = list(tr.y) if tr.y is not None else list(range(z.shape[0]))
            out[name] = [(xs[c], ys[r], z[r, c]) for r in range(z.shape[0]) for c in range(z.shape[1])]
        else:
            ys = np.asarray(tr.y, dtype=float)
            xs = list(tr.x) if tr.x is not None else list(range(len(ys)))
            out[name] = [(x, y) for x, y in zip(xs, ys.tolist())]
    return out


def csv_points(text: str) -> dict[str, list[tuple]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    out = {}
    for r in rows:
        pt = (float(r["x"]), float(r["y"])) + ((float(r["z"]),) if r.get("z") else ())
        out.setdefault(r["trace"], []).append(pt)
    return out


def assert_points_equal(got: dict, want: dict):
    assert list(got) == list(want)
    for name in want:
        assert len(got[name]) == len(want[name]), name
        for g, w in zip(got[name], want[name]):
            assert all(same(a, b) for a, b in zip(g, w)), (name, g, w)


# ---- CSV / JSON (no browser needed) -------------------------------------------------------------------------
@pytest.mark.parametrize("make", [line_figure, heatmap_figure])
def test_csv_gives_back_the_trace_numbers_exactly(make):
    fig = make()
    text = export.figure_csv(fig)
    header = text.splitlines()[0]
    assert header == ("trace,x,y,z" if make is heatmap_figure else "trace,x,y")
    assert_points_equal(csv_points(text), trace_points(fig))


def test_csv_and_json_read_typed_array_dicts_like_numpy_arrays():
    for make in (line_figure, heatmap_figure):
        fig = make()
        from_json = go.Figure(json.loads(fig.to_json()))  # arrays come back as {"dtype", "bdata"(, "shape")}
        assert isinstance(from_json.data[0].y, dict) or isinstance(from_json.data[0].z, dict)
        assert export.figure_csv(from_json) == export.figure_csv(fig)
        assert export.figure_json(from_json) == export.figure_json(fig)


def test_csv_float32_values_are_exact():
    fig = line_figure()
    rows = [r for r in csv.DictReader(io.StringIO(export.figure_csv(fig))) if r["trace"] == "gru f32"]
    want = (np.arange(12, dtype=np.float32) / 7).astype(np.float32)
    assert [np.float32(float(r["y"])) for r in rows] == want.tolist()
    assert [float(r["y"]) for r in rows] == want.astype(float).tolist()


def test_json_has_config_and_plain_traces():
    fig = line_figure()
    text = export.figure_json(fig)

    def no_constants(c):
        raise AssertionError(f"non-standard JSON constant {c}")

    doc = json.loads(text, parse_constant=no_constants)
    assert doc["config"] == CONFIG and doc["meta"] == CONFIG
    assert doc["title"] == "||dL/dh_t||"
    assert [t["name"] for t in doc["traces"]] == ["rnn", "lstm", "gru f32", "rnn (3)", "σmax of Whh"]
    lstm = doc["traces"][1]
    assert lstm["type"] == "scatter" and lstm["x"] == list(range(12))
    assert lstm["y"][:4] == [0.1, None, None, 1e-300]  # NaN and inf -> null
    assert doc["traces"][3]["x"] == [0, 1, 2]
    heat = json.loads(export.figure_json(heatmap_figure()))["traces"][0]
    assert heat["type"] == "heatmap" and len(heat["z"]) == 3 and heat["z"][1][2] is None


def test_json_config_is_none_without_meta():
    doc = json.loads(export.figure_json(go.Figure(go.Scatter(y=[1, 2]))))
    assert doc["config"] is None and doc["traces"][0]["y"] == [1, 2]


# ---- images ------------------------------------------------------------------------------------------------
@needs_browser
@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_figure_bytes_are_real_files(fmt):
    CHECK[fmt](export.figure_bytes(line_figure(), fmt))


@needs_browser
def test_png_is_1920x1080_and_the_original_figure_is_untouched():
    fig = heatmap_figure()
    fig.update_layout(width=640, height=480)  # the slide size wins on the copy
    before = fig.to_json()
    assert_png(export.figure_bytes(fig, "png"))
    assert fig.to_json() == before


@needs_browser
def test_renders_from_several_threads():
    out, errors = [], []

    def work():
        try:
            out.append(export.figure_bytes(line_figure(), "png"))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(out) == 3
    for b in out:
        assert_png(b)


def test_figure_bytes_rejects_other_formats():
    with pytest.raises(ValueError, match="png, svg, pdf"):
        export.figure_bytes(line_figure(), "jpeg")


@needs_browser
def test_view_zip_holds_every_figure_in_every_format():
    figs = {"grad norm": line_figure(), "heat": heatmap_figure()}
    z = zipfile.ZipFile(io.BytesIO(export.view_zip(figs, {"cell": "gru", "seq_len": 5})))
    names = set(z.namelist())
    want = {f"{n}.{f}" for n in ("grad_norm", "heat") for f in export.FORMATS} | {"config.json"}
    assert names == want
    for name in want - {"config.json"}:
        CHECK[name.rsplit(".", 1)[1]](z.read(name))
    assert json.loads(z.read("config.json")) == {"cell": "gru", "seq_len": 5}
    assert_points_equal(csv_points(z.read("heat.csv").decode()), trace_points(figs["heat"]))
    # config None: taken from the figures' layout.meta
    z2 = zipfile.ZipFile(io.BytesIO(export.view_zip({"a": line_figure()}, None, formats=("svg", "json"))))
    assert set(z2.namelist()) == {"a.svg", "a.json", "config.json"}
    assert json.loads(z2.read("config.json")) == CONFIG


def test_view_zip_rejects_unknown_formats():
    with pytest.raises(ValueError, match="'gif'"):
        export.view_zip({"a": line_figure()}, None, formats=("png", "gif"))


# ---- no browser --------------------------------------------------------------------------------------------
@pytest.fixture
def no_browser(monkeypatch):
    monkeypatch.setattr(export.images, "_find_browser", lambda: None)
    monkeypatch.delenv("BROWSER_PATH", raising=False)


def test_no_browser_raises_with_an_install_hint(no_browser):
    ok, hint = export.export_available()
    assert ok is False and "chromium" in hint.lower() and "install" in hint.lower() and "\n" not in hint
    for fmt in ("png", "svg", "pdf"):
        with pytest.raises(export.ExportUnavailable) as e:  # even if an earlier test started the server
            export.figure_bytes(line_figure(), fmt)
        msg = str(e.value)
        assert "chromium" in msg.lower() and "install" in msg.lower() and "\n" not in msg
        assert isinstance(e.value, RuntimeError)


def test_no_browser_zip_keeps_the_data_and_says_why(no_browser):
    figs = {"grad": line_figure(), "heat": heatmap_figure()}
    z = zipfile.ZipFile(io.BytesIO(export.view_zip(figs, {"cell": "rnn"})))
    assert set(z.namelist()) == {"grad.csv", "grad.json", "heat.csv", "heat.json", "config.json", "README.txt"}
    readme = z.read("README.txt").decode()
    assert "PNG/SVG/PDF" in readme and "apt-get install -y chromium" in readme
    assert_points_equal(csv_points(z.read("grad.csv").decode()), trace_points(figs["grad"]))
    with pytest.raises(export.ExportUnavailable, match="(?i)chromium"):  # only images asked for
        export.view_zip(figs, None, formats=("png", "pdf"))


def test_no_browser_export_all_raises_before_writing(no_browser, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(export.ExportUnavailable, match="(?i)install"):
        export.export_all(tiny_config(), str(out), formats=("csv", "png"))
    assert not out.exists()


def test_browser_path_is_honoured(monkeypatch, tmp_path):
    exe = tmp_path / "my-chromium"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("BROWSER_PATH", str(exe))
    assert export.images._find_browser() == str(exe)
    assert export.export_available() == (True, "")
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "missing"))
    assert export.images._find_browser() is None
    ok, hint = export.export_available()
    assert not ok and "BROWSER_PATH" in hint and "install" in hint


@pytest.mark.stops_renderer
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_browser_that_fails_to_start_raises_instead_of_hanging(monkeypatch, tmp_path):
    """kaleido's sync server blocks forever once its thread died; figure_bytes watches it (runs after every other
    test of the session, conftest: it stops the shared server, and the next render would start a fresh one)."""
    import kaleido
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    kaleido.stop_sync_server(silence_warnings=True)
    with pytest.raises(export.ExportUnavailable, match="(?i)chromium"):
        export.figure_bytes(line_figure(), "svg")
    assert not kaleido._global_server.is_running()  # reset: the next call may start a working browser


def test_table_figure_csv_holds_its_rows():
    import csv as _csv
    import io as _io

    import plotly.graph_objects as go

    from analysis.export import figure_csv
    fig = go.Figure(go.Table(header=dict(values=["step", "<b>sample</b>"]),
                             cells=dict(values=[[10, 20], ["helo", "hello"]])))
    rows = list(_csv.reader(_io.StringIO(figure_csv(fig))))
    assert rows == [["step", "sample"], ["10", "helo"], ["20", "hello"]]
