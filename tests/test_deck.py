"""analysis.deck: the .pptx structure (always: real images when Chromium is here, else stand-in PNGs of the
right size), the command line's export --pptx, and a LibreOffice conversion when soffice is installed."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from pptx import Presentation

from analysis import deck, export
from analysis.config import ExperimentConfig
from analysis.export.bundles import view_figures_of
from analysis.guides import VIEW_GUIDES
from conftest import white_png as png

ROOT = Path(__file__).resolve().parents[1]
HAVE_BROWSER, HINT = export.export_available()
CONFIG = ExperimentConfig(seq_len=12, hidden_size=8, compare=("rnn", "lstm"), batch_size=4)


@pytest.fixture(scope="module")
def views():
    return view_figures_of(CONFIG)


@pytest.fixture(scope="module")
def built(views):
    """(pptx bytes, the images handed to the deck in slide order)."""
    rendered = []

    def render_images(jobs, scale, on_done):
        if HAVE_BROWSER:
            out = export.render(jobs, scale=scale, on_done=on_done)
        else:
            out = [png(int(1920 * scale), int(1080 * scale)) for _ in jobs]
        rendered.extend(out)
        return out
    title, lines = deck.heading(CONFIG)
    data = deck.deck_bytes(views, CONFIG, title=title, lines=lines, scale=1, render_images=render_images)
    return data, rendered


def test_one_slide_per_figure_after_a_title_slide(views, built):
    data, _ = built
    prs = Presentation(io.BytesIO(data))
    names = [(v, n) for v, figs in views.items() for n in figs]
    assert len(prs.slides) == 1 + len(names) and len(names) >= 8
    assert (prs.slide_width, prs.slide_height) == (12192000, 6858000)  # 13.333 x 7.5 in, 16:9
    first = prs.slides[0]
    assert not any(s.shape_type == 13 for s in first.shapes)  # no picture on the title slide
    assert first.shapes.title.text_frame.text == deck.heading(CONFIG)[0]


def test_each_picture_is_the_figures_image_at_slide_size(views, built):
    data, rendered = built
    prs = Presentation(io.BytesIO(data))
    figs = [fig for f in views.values() for fig in f.values()]
    for slide, img, fig in zip(list(prs.slides)[1:], rendered, figs):
        pics = [s for s in slide.shapes if s.shape_type == 13]
        assert len(pics) == 1
        pic = pics[0]
        assert (pic.left, pic.top, pic.width, pic.height) == (0, 0, prs.slide_width, prs.slide_height)
        assert pic.image.blob == img and export.png_size(img) == (1920, 1080)
        assert slide.shapes.index(pic) == 0  # behind the title and the caption
        want = "".join(t for t, _ in deck.title_runs(deck.figure_title(fig, "")))
        assert slide.shapes.title.text_frame.text == want and want


def test_captions_are_each_figures_own_and_notes_hold_the_config_json(views, built):
    data, _ = built
    prs = Presentation(io.BytesIO(data))
    slides = list(prs.slides)
    order = [(v, fig) for v, f in views.items() for fig in f.values()]
    for slide, (view, fig) in zip(slides[1:], order):
        texts = [s.text_frame.text for s in slide.shapes if s.has_text_frame and s != slide.shapes.title]
        own = fig.layout.meta["caption"]
        assert own != VIEW_GUIDES[view] and deck.figure_caption(fig, view) == own
        assert texts == ["".join(t for t, _ in deck.caption_runs(own))]
    for slide in slides:
        notes = slide.notes_slide.notes_text_frame.text
        assert json.loads(notes[notes.index("{"):]) == CONFIG.to_dict()
        assert ExperimentConfig.from_json(notes[notes.index("{"):]) == CONFIG


def test_heading_names_the_preset_and_what_changed():
    from analysis.presets import PRESETS
    p = PRESETS["vanishing-tanh"]
    assert deck.heading(p.config) == (p.title, p.lines + [deck.heading(p.config)[1][-1]])
    title, lines = deck.heading(p.config.replace(seq_len=50), "vanishing-tanh")
    assert title == p.title and lines[:2] == p.lines and "seq_len 100 → 50" in lines[2]
    assert lines[-1].startswith("Settings: ")
    title, lines = deck.heading(CONFIG)  # no preset matches
    assert title == "Gradient dynamics: RNN vs LSTM" and lines[0].startswith("Settings: ")
    with pytest.raises(ValueError, match="preset='nope'"):
        deck.heading(CONFIG, "nope")


def test_title_and_caption_runs_keep_sub_and_superscripts():
    assert deck.title_runs("‖∂h<sub>T-1</sub>‖<br>x<sup>k</sup>") == [("‖∂h", ""), ("T-1", "sub"), ("‖ x", ""),
                                                                      ("k", "sup")]
    # the spaces around a sub/superscript stay (issue 19: "Spectral radius of Whhduring training")
    assert deck.title_runs("Spectral radius of W<sub>hh</sub> during training") == [
        ("Spectral radius of W", ""), ("hh", "sub"), (" during training", "")]
    assert deck.title_runs("RNN hidden state h<sub>t</sub> per unit  and  step") == [
        ("RNN hidden state h", ""), ("t", "sub"), (" per unit and step", "")]
    assert deck.caption_runs("σ_max(W_hh))^k, c_{t-1}") == [("σ", ""), ("max", "sub"), ("(W", ""), ("hh", "sub"),
                                                            ("))", ""), ("k", "sup"), (", c", ""), ("t-1", "sub")]
    assert deck.caption_runs("hidden_size, forget_bias") == [("hidden_size, forget_bias", "")]


def test_deck_figure_leaves_the_title_and_caption_bands_free():
    from analysis.figures import view_figures
    from analysis.experiment import run_experiment
    fig = next(iter(view_figures("gradient-flow", {"rnn": run_experiment(CONFIG.for_cell("rnn"))}).values()))
    f = deck.deck_figure(fig)
    assert not f.layout.title.text and f.layout.margin.t >= deck.TOP_PX
    assert f.layout.margin.b >= deck.CAPTION_PX + 100 and (f.layout.width, f.layout.height) == (1920, 1080)
    assert fig.layout.title.text  # the original is untouched


@pytest.mark.skipif(not HAVE_BROWSER, reason=f"no Chromium here: {HINT}")
def test_cli_export_pptx_writes_the_deck_with_a_progress_bar(tmp_path, cli_inproc):
    out = tmp_path / "deck.pptx"  # `python -m analysis export ...`: main() in this process (conftest.run_main)
    r = cli_inproc("export", "--preset", "vanishing-tanh", "--seq-len", "16", "--hidden-size", "8", "--batch-size",
                   "4", "--pptx", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    bars = [line for line in r.stderr.splitlines() if line.startswith("[")]
    assert bars[-1].startswith("[" + "#" * 30 + "] 100%") and any("rendered slide" in b for b in bars)
    prs = Presentation(str(out))
    assert prs.slides[0].shapes.title.text_frame.text.startswith("Vanishing gradients")
    pic = next(s for s in prs.slides[1].shapes if s.shape_type == 13)
    assert export.png_size(pic.image.blob) == (1920 * deck.DEFAULT_SCALE, 1080 * deck.DEFAULT_SCALE)


def test_without_chromium_the_deck_says_how_to_install_it(monkeypatch, views):
    monkeypatch.setattr(export.images, "_find_browser", lambda: None)
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    with pytest.raises(export.ExportUnavailable, match="apt-get install -y chromium"):
        deck.deck_bytes(views, CONFIG)


def test_cli_bad_pptx_path_is_one_line_and_writes_nothing(tmp_path, cli_inproc):
    for path, word in ((tmp_path / "deck.ppt", ".pptx"), (tmp_path / "no" / "deck.pptx", "folder")):
        r = cli_inproc("export", "--seq-len", "12", "--pptx", str(path))
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and word in r.stderr
        assert not path.exists()


@pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice (soffice) is not installed")
def test_libreoffice_converts_the_deck_to_a_pdf_page_per_slide(built, tmp_path):
    data, _ = built
    src = tmp_path / "deck.pptx"
    src.write_bytes(data)
    subprocess.run(["soffice", "--headless", f"-env:UserInstallation=file://{tmp_path}/lo", "--convert-to", "pdf",
                    "--outdir", str(tmp_path), str(src)], check=True, capture_output=True, timeout=300)
    pdf = (tmp_path / "deck.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    n_pages = len([m for m in pdf.split(b"/Type") if m.lstrip().startswith(b"/Page") and
                   not m.lstrip().startswith(b"/Pages")])
    assert n_pages == len(Presentation(io.BytesIO(data)).slides)


@pytest.mark.skipif(not HAVE_BROWSER, reason=f"no Chromium here: {HINT}")
def test_dashboard_builds_decks_on_the_page_with_progress_and_shows_the_version(monkeypatch):
    """A deck button per view and one for all views; a click renders the slides under a status box with a bar
    naming each slide, then offers the file (stand-in images here: the rendering itself is tested above)."""
    from streamlit.testing.v1 import AppTest
    from analysis import __version__
    rendered = []

    def fake_render(jobs, scale, on_done):
        for i in range(len(jobs)):
            on_done(i + 1, len(jobs))
        rendered.append(len(jobs))
        return [png(16, 9) for _ in jobs]
    monkeypatch.setattr(deck, "render", lambda jobs, scale, on_done: fake_render(jobs, scale, on_done))
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
    for k, v in {"seq_len": "12", "hidden_size": "6", "batch_size": "4"}.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    buttons = {b.proto.label: b for b in at.button}
    assert "Slide deck of all views (.pptx)" in buttons
    assert "Slide deck of this view (.pptx)" in buttons  # the open tab's
    assert any("Atlas joins the deck of all views" in c.value for c in at.caption)
    assert any(f"gradient-dynamics lab {__version__}" in c.value for c in at.caption)
    assert not [b for b in at.get("download_button") if b.proto.label.startswith("Download gradient-dynamics.pptx")]
    buttons["Slide deck of all views (.pptx)"].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert rendered and rendered[0] >= 8
    status = [e for e in at.get("status") if "gradient-dynamics.pptx" in e.label]
    assert status and "is ready" in status[0].label, [e.label for e in at.get("status")]
    bars = [p.proto.text for p in at.get("progress")]
    assert any(f"{rendered[0]} slides rendered" in t for t in bars), bars
    dl = [b.proto.label for b in at.get("download_button") if b.proto.label.startswith("Download gradient-dynamics")]
    assert dl and f"({rendered[0] + 1} slides" in dl[0]
    at.run()  # the built deck stays offered while the settings are the same
    assert [b for b in at.get("download_button") if b.proto.label.startswith("Download gradient-dynamics")]


def test_the_notes_say_what_each_run_actually_ran():
    """Every slide's notes (title slide included) carry each run's provenance lines (T, B, loss, layer...) as
    analysis.provenance records them, before the settings JSON."""
    records: dict = {}
    views = view_figures_of(CONFIG, records=records)
    assert set(records) >= {"rnn", "lstm"}
    data = deck.deck_bytes(views, CONFIG, title="t", scale=1, render_images=lambda jobs, scale, on_done: [
        png(64, 36) for _ in jobs], provenance={k: v["provenance"] for k, v in records.items()})
    for slide in Presentation(io.BytesIO(data)).slides:
        notes = slide.notes_slide.notes_text_frame.text
        for run in ("rnn", "lstm"):
            assert f"What ran ({run}):" in notes, notes[:300]
        assert f"ran: T={CONFIG.seq_len}, B={CONFIG.batch_size}," in notes, notes[:300]
        assert notes.index("What ran") < notes.index("Settings (ExperimentConfig JSON)")


@pytest.mark.skipif(not HAVE_BROWSER, reason=f"no Chromium here: {HINT}")
def test_dashboard_decks_carry_each_runs_provenance_as_export_pptx_does(monkeypatch):
    """Issue 18: the dashboard's deck buttons (all views, and the open view's) hand the deck each run's provenance,
    so every slide's notes say what ran, line for line as analysis.provenance records a run of the settings written
    in the same notes (run here again, independently of the page)."""
    from streamlit.testing.v1 import AppTest
    from analysis.experiment import run_experiment
    from analysis.provenance import provenance_lines
    monkeypatch.setattr(deck, "render", lambda jobs, scale, on_done: [png(16, 9) for _ in jobs])
    built, real = [], deck.deck_bytes

    def spy(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]
    monkeypatch.setattr(deck, "deck_bytes", spy)
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
    for k, v in {"seq_len": "12", "hidden_size": "6", "batch_size": "4"}.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    for label in ("Slide deck of all views (.pptx)", "Slide deck of this view (.pptx)"):
        next(b for b in at.button if b.proto.label == label).click().run()
        assert not at.exception, [e.value for e in at.exception]
    assert len(built) == 2
    for data in built:
        slides = list(Presentation(io.BytesIO(data)).slides)
        notes = [s.notes_slide.notes_text_frame.text for s in slides]
        cfg = ExperimentConfig.from_json(notes[0][notes[0].index("{"):])
        assert cfg.seq_len == 12 and cfg.hidden_size == 6 and cfg.cells
        for cell in cfg.cells:
            lines = provenance_lines(run_experiment(cfg.for_cell(cell)).provenance)
            assert lines and lines[0].startswith("ran: T=12, B=4,")
            block = f"What ran ({cell}):\n" + "\n".join(lines)
            assert all(block in n for n in notes), notes[0][:600]
