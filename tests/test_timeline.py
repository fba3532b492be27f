"""The timeline of watched runs: the figure carries the run's own numbers on a fixed colour scale; the dashboard's
Timeline tab reads uploaded run archives (zip / tar.gz) by widget key, refuses foreign or corrupt files in one line,
and lists the runs of ``gdlab dashboard --runs DIR``."""
from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis import load_run, watch
from analysis.figures.timeline import ZMAX, ZMIN, timeline_figures
from analysis.run_files import read_run_archive
from rnn_models.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
V = 7


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Embedding(V, 4)
        self.rnn = nn.GRU(4, 5)
        self.decoder = nn.Linear(5, V)

    def forward(self, ids):
        return self.decoder(self.rnn(self.encoder(ids))[0])


def _run(path: Path, clip: float, steps: int = 6) -> Path:
    torch.manual_seed(0)
    m = TinyLM()
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    w = watch(m, str(path), every=2)
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        x, y = torch.randint(0, V, (9, 3), generator=g), torch.randint(0, V, (9, 3), generator=g)
        loss = F.cross_entropy(m(x).reshape(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        w.record(step, loss=loss)
        gn = nn.utils.clip_grad_norm_(m.parameters(), clip)
        w.note(step, grad_norm=gn, clipped=bool(gn > clip))
        opt.step()
    w.close()
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    return _run(d / "clip", 0.05), _run(d / "noclip", 1e9)


def _zip(path: Path, top: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in path.iterdir():
            z.write(f, f"{top}/{f.name}" if top else f.name)
    return buf.getvalue()


def _targz(path: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        t.add(path, arcname=path.name)
    return buf.getvalue()


def _heat(fig, col: int):
    return [t for t in fig.data if t.type == "heatmap"][col]


def test_figure_holds_the_runs_numbers_on_a_fixed_scale(runs):
    a, b = load_run(str(runs[0])), load_run(str(runs[1]))
    figs = timeline_figures({"clip": a, "noclip": b})
    fig = figs["timeline"]
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (ZMIN, ZMAX)  # not the data's range
    assert "log10" in fig.layout.coloraxis.colorbar.title.text
    np.testing.assert_array_equal(np.asarray(_heat(fig, 0).z), a.log10_grad_norm[-1].T)
    np.testing.assert_array_equal(np.asarray(_heat(fig, 1).z), b.log10_grad_norm[-1].T)
    np.testing.assert_array_equal(np.asarray(_heat(fig, 0).x), a.steps)
    clipped = [t for t in fig.data if t.name == "clipped"]
    assert len(clipped) == 1 and list(clipped[0].x) == list(a.note_series("clipped")[0])  # only the clipped run
    horizon = [t for t in fig.data if t.name == "memory horizon"]
    np.testing.assert_array_equal(np.asarray(horizon[0].x), a.probe_steps)
    eig = figs["eigenvalues"]
    assert [f.name for f in eig.frames] == ["0", "2", "4"] and eig.layout.sliders[0].steps[2].label == "4"
    circle = [t for t in eig.data if t.name and "unit circle" in t.name]
    assert len(circle) == 2 and np.allclose(np.hypot(circle[0].x, circle[0].y), 1)
    z = eig.frames[1].data[0]
    np.testing.assert_allclose(np.asarray(z.x) + 1j * np.asarray(z.y), a.eigenvalues[-1][1]["r"])


def test_archives_read_in_memory_and_bad_files_refused(runs, tmp_path):
    r = read_run_archive(_zip(runs[0], "clip"), "clip.zip")
    assert r.name == "clip" and r.steps.tolist() == list(range(6))
    assert read_run_archive(_targz(runs[1]), "noclip.tar.gz").steps.tolist() == list(range(6))
    for data, name, words in [(b"not an archive", "x.zip", "not a readable"),
                              (_zip(runs[0], "a/b/c"), "deep.zip", "no run.json"),
                              (_zip(ROOT / "analysis" / "data"), "foreign.zip", "no run.json")]:
        with pytest.raises(ConfigError, match=words) as e:
            read_run_archive(data, name)
        assert "\n" not in str(e.value)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("run.json", json.dumps({"format": "gdlab-run", "version": 1, "layers": ["l0"]}))
        z.writestr("records.jsonl", "{broken\n{\"step\": 1}\n")
    with pytest.raises(ConfigError, match="records.jsonl line 1"):
        read_run_archive(buf.getvalue(), "broken.zip")


def test_view_uploads_by_key_and_draws_both_runs(runs):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_string(f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
                             "from dashboard.views import timeline\ntimeline.render(None)\n", default_timeout=60)
    at.run()
    assert not at.exception
    assert any("No watched run yet" in i.value for i in at.info)
    up = at.get("file_uploader")
    assert up  # the uploader is there before any run
    at.file_uploader(key="timeline_upload").upload("clip.zip", _zip(runs[0]), "application/zip").run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 2 and not at.error
    at.file_uploader(key="timeline_upload").set_value([("clip.zip", _zip(runs[0]), "application/zip"),
                                                       ("noclip.tar.gz", _targz(runs[1]), "application/gzip"),
                                                       ("junk.zip", b"garbage", "application/zip")]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == ["upload 'junk.zip': not a readable .zip or .tar(.gz) of a run directory"]
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    titles = [s["layout"]["meta"]["figure"] for s in specs]
    assert titles == ["timeline", "eigenvalues"]
    heat = [t for t in specs[0]["data"] if t["type"] == "heatmap"]
    assert len(heat) == 2 and specs[0]["layout"]["coloraxis"]["cmin"] == ZMIN
    assert at.selectbox(key="timeline_layer").value == "rnn.l0"


def test_local_runs_listed_from_the_runs_folder(runs, monkeypatch):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("GDLAB_RUNS", str(runs[0].parent))
    at = AppTest.from_string(f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
                             "from dashboard.views import timeline\ntimeline.render(None)\n", default_timeout=60)
    at.run()
    assert not at.exception
    ms = at.multiselect(key="timeline_local")
    assert ms.options == ["clip", "noclip"] and ms.value == ["clip", "noclip"]
    assert len(at.get("plotly_chart")) == 2


def test_timeline_tab_in_the_app():
    from test_app import APP, SMALL, array, ok
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in SMALL.items():
        at.query_params[k] = v
    at.session_state["view"] = "Timeline"
    ok(at.run())
    assert at.file_uploader(key="timeline_upload") is not None
    # a Live training run joins the timeline once it has a step
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in {**SMALL, "task": "adding"}.items():
        at.query_params[k] = v
    at.session_state["view"] = "Live training"
    ok(at.run())
    ok(at.button(key="train_step").click().run())
    at.query_params["view"] = "Timeline"  # the tab is bound to the URL once it left the default
    ok(at.run())
    assert at.checkbox(key="timeline_live").value is True
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert [s["layout"]["meta"]["figure"] for s in specs] == ["timeline", "eigenvalues"]
    heat = [t for t in specs[0]["data"] if t["type"] == "heatmap"]
    assert [t["name"] for t in heat] == [f"live: {k}: log10 ||dL/dh_t||" for k in at.session_state["trainers"]]
    for t, tr in zip(heat, at.session_state["trainers"].values()):
        np.testing.assert_allclose(array(t["z"])[:, 0], np.log10(tr.records[0].grad_norm_t))


def test_gdlab_dashboard_runs_flag(tmp_path, monkeypatch, capsys):
    import os

    import gdlab
    assert gdlab.main(["dashboard", "--runs", str(tmp_path / "missing")]) == 2
    assert "--runs" in capsys.readouterr().err
    seen = {}

    class Started(Exception):
        pass

    def start(path, cmd):  # instead of becoming streamlit (and never returning)
        seen.update(cmd=cmd, runs=os.environ.get("GDLAB_RUNS"))
        raise Started
    monkeypatch.setattr(os, "execv", start)
    monkeypatch.setattr(gdlab.subprocess, "call", start)
    monkeypatch.delenv("GDLAB_RUNS", raising=False)
    with pytest.raises(Started):
        gdlab.main(["dashboard", "--headless", "--runs", str(tmp_path)])
    assert seen["runs"] == str(tmp_path) and "streamlit" in seen["cmd"]


def test_timeline_deck_has_a_slide_per_figure_with_its_caption(runs):
    from pptx import Presentation

    from dashboard.views.timeline import deck
    from test_deck import png
    figs = timeline_figures({"clip": load_run(str(runs[0])), "noclip": load_run(str(runs[1]))})
    data = deck(figs, ["clip", "noclip"], render_images=lambda jobs, scale, on_done: [png(16, 9) for _ in jobs])
    prs = Presentation(io.BytesIO(data))
    texts = [" ".join(sh.text_frame.text for sh in s.shapes if sh.has_text_frame) for s in prs.slides]
    assert len(texts) == 3 and "clip, noclip" in texts[0]
    assert "fixed colour scale" in texts[1] and "unit circle" in texts[2]


def test_eigenvalue_axes_hold_every_probe(runs):
    r = load_run(str(runs[0]))
    fig = timeline_figures({"a": r})["eigenvalues"]
    biggest = max(float(np.abs(v).max()) for e in r.eigenvalues[-1] for v in e.values())
    lo, hi = fig.layout.xaxis.range
    assert lo == -hi and hi >= max(1.0, biggest) and tuple(fig.layout.yaxis.range) == (lo, hi)
