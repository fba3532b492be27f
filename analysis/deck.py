"""The slide deck: every figure of one or more views on its own 16:9 slide, as a .pptx (python-pptx).

    deck_bytes(views, config, title, lines, scale=2, progress=None) -> bytes   the .pptx file
    heading(config, preset=None, variant=None) -> (title, lines)   the first slide: the preset's title and its
                                              "what to look for" lines (or the settings when no preset matches)
    write_deck(config, path, preset=None, progress=None) -> path    the command line's ``export --pptx``

``views`` is {view: {figure name: plotly figure}} (``analysis.figures.view_figures`` per view). The deck is a
title slide, then one slide per figure in the order given:

    picture   the figure rendered by kaleido at 1920x1080 CSS pixels x ``scale`` (3840x2160 by default),
              placed at (0, 0) with the slide's size (13.333 x 7.5 in): it fills the slide
    title     the figure's own title, taken off the image and set as the slide's title placeholder (real,
              editable text, sub/superscripts kept) in the band the figure leaves free at the top
    caption   the figure's own caption (``layout.meta["caption"]``, written by the figure's builder for what that
              figure shows), else the view's guide (``analysis.guides.VIEW_GUIDES``), in a band left free at the bottom
    notes     the view and figure names, then the experiment's settings as JSON (``ExperimentConfig.to_json``),
              which ``python -m analysis export --config`` reads back

Image geometry, slide px = CSS px at 1080 px per 7.5 in (144 px/in): the figure's top margin becomes
``TOP_PX`` (title band) and its bottom margin grows by ``CAPTION_PX`` (caption band).
"""
from __future__ import annotations

import io
import json
import os
import re

import plotly.graph_objects as go
from pptx import Presentation
from pptx.dml.color import RGBColor
from pptx.enum.text import MSO_ANCHOR, PP_ALIGN
from pptx.util import Pt

from .export import ExportUnavailable, export_available, render, slide_figure
from .export.bundles import scaled, view_figures_of
from .figures import legend_below
from .guides import VIEW_GUIDES, VIEW_TITLES, describe
from .provenance import provenance_lines
from .variant import variant_heading, variant_label  # noqa: F401 - variant_label: one function, re-exported

SLIDE_W_EMU, SLIDE_H_EMU = 12192000, 6858000  # 13.333 x 7.5 in (16:9)
EMU_PER_PX = SLIDE_H_EMU // 1080  # 6350: 1080 CSS px fill the slide's height
TOP_PX = 170  # the band above the plot for the slide title
CAPTION_PX = 170  # the band below the plot (and its legend) for the caption (4 lines of 13 pt)
SUBPLOT_TITLES_PX = 50  # more room at the top when subplot titles sit above the plots
DEFAULT_SCALE = 2  # 3840x2160 pictures: sharp on a 4K projector
TITLE_PT, CAPTION_PT = 26, 13


# ---- words ---------------------------------------------------------------------------------------------------
def heading(config, preset: str | None = None, variant: dict | None = None) -> tuple[str, list[str]]:
    """(title, lines) of the first slide.

    ``preset`` names a preset (ValueError if unknown); None picks the preset whose config equals ``config``,
    if any. Settings that differ from the preset are listed; the last line describes the settings in force.
    """
    from .presets import PRESETS
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset={preset!r} is not known: choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset] if preset else next((p for p in PRESETS.values() if p.config == config), None)
    settings = "Settings: " + describe(config)
    if variant:
        settings += " · variant (lighter colour): " + variant_heading(config, variant)
    if p is None:
        from .figures import CELL_LABELS
        return "Gradient dynamics: " + " vs ".join(CELL_LABELS[c] for c in config.cells), [settings]
    old, new = p.config.to_dict(), config.to_dict()
    changed = [f"{k} {old[k]!r} → {new[k]!r}" for k in new if new[k] != old.get(k)]
    lines = list(p.lines)
    if changed:
        lines.append("Changed from the preset: " + ", ".join(changed))
    return p.title, lines + [settings]


_TAG = re.compile(r"<(/?)(sub|sup|br|b|i|em|span|a|s|u)\b[^>]*>", re.IGNORECASE)


def title_runs(text: str) -> list[tuple[str, str]]:
    """Plotly's title HTML as (text, "sub" | "sup" | "") runs; <br> becomes a space, other tags are dropped.

    Whitespace is kept where it stands (runs of it become one space, none at the ends), so the words on either
    side of a sub/superscript stay apart: "W<sub>hh</sub> during" -> ("W", ""), ("hh", "sub"), (" during", "").
    """
    runs, mode, pos = [], "", 0
    for m in _TAG.finditer(text):
        if m.start() > pos:
            runs.append((text[pos:m.start()], mode))
        closing, tag = m.group(1), m.group(2).lower()
        if tag in ("sub", "sup"):
            mode = "" if closing else tag
        elif tag == "br":
            runs.append((" ", mode))
        pos = m.end()
    if pos < len(text):
        runs.append((text[pos:], mode))
    out: list[tuple[str, str]] = []
    for t, m in runs:
        t = re.sub(r"\s+", " ", t)
        if out and out[-1][0].endswith(" ") and t.startswith(" "):
            t = t[1:]  # one space between two runs, never two
        if not out:
            t = t.lstrip()
        if not t:
            continue
        if out and out[-1][1] == m:
            out[-1] = (out[-1][0] + t, m)
        else:
            out.append((t, m))
    if out and out[-1][0].endswith(" "):
        t, m = out.pop()
        if t.rstrip():
            out.append((t.rstrip(), m))
    return out


# a subscript or superscript after a symbol of at most two letters ("h_t", "σ_max", "W_hh", "dh_{T-1}", ")^k"),
# never inside a longer name ("hidden_size", "forget_bias")
_SCRIPT = re.compile(r"(?<![^\W\d_]{3})(?<=[^\W_]|[)→←])([_^])(\{[^{}]*\}|[A-Za-z0-9]+)")


def caption_runs(text: str) -> list[tuple[str, str]]:
    """The guides' plain-text math as runs: "σ_max(W_hh)^k" -> σ, max (sub), (W, hh (sub), ), k (sup);
    "_{T-1}" and "^{...}" group several characters."""
    runs, pos = [], 0
    for m in _SCRIPT.finditer(text):
        if m.start() > pos:
            runs.append((text[pos:m.start()], ""))
        body = m.group(2)
        runs.append((body[1:-1] if body.startswith("{") else body, "sub" if m.group(1) == "_" else "sup"))
        pos = m.end()
    if pos < len(text):
        runs.append((text[pos:], ""))
    return runs


def figure_caption(fig: go.Figure, view: str) -> str:
    """The figure's own caption (its ``layout.meta["caption"]``), else the view's guide."""
    meta = fig.layout.meta
    own = meta.get("caption") if isinstance(meta, dict) else None
    return own if isinstance(own, str) and own.strip() else VIEW_GUIDES.get(view, "")


def figure_title(fig: go.Figure, fallback: str) -> str:
    t = fig.layout.title.text if fig.layout.title is not None else None
    return t if isinstance(t, str) and t.strip() else fallback


# ---- images --------------------------------------------------------------------------------------------------
def deck_figure(fig: go.Figure) -> go.Figure:
    """A copy of ``fig`` on a 1920x1080 slide without its title: a band of TOP_PX at the top (the slide's
    title goes there) and CAPTION_PX more at the bottom (the caption goes there)."""
    f = slide_figure(fig)
    bottom = f.layout.margin.b if f.layout.margin.b is not None else 150
    above = any(a.yref == "paper" and a.y is not None and a.y >= 0.99 for a in f.layout.annotations)
    f.update_layout(title_text="", margin=dict(t=TOP_PX + (SUBPLOT_TITLES_PX if above else 0),
                                               b=bottom + CAPTION_PX))
    if f.layout.legend.orientation == "h":  # the plot is shorter now: keep the legend clear of the x axis
        legend_below(f)
    return f


# ---- the deck ------------------------------------------------------------------------------------------------
def _set_text(frame, runs_or_text, size_pt: float, *, bold=False, color=(0x1F, 0x29, 0x37), paragraphs=None):
    """Replace the frame's text: one paragraph of runs [(text, "sub" | "sup" | "")] or ``paragraphs``."""
    frame.clear()
    frame.word_wrap = True
    items = paragraphs if paragraphs is not None else [runs_or_text]
    for i, item in enumerate(items):
        p = frame.paragraphs[0] if i == 0 else frame.add_paragraph()
        p.alignment = PP_ALIGN.LEFT
        runs = item if isinstance(item, list) else [(item, "")]
        for text, mode in runs:
            r = p.add_run()
            r.text = text
            r.font.size, r.font.bold = Pt(size_pt), bold
            r.font.color.rgb = RGBColor(*color)
            r.font.name = "Arial"
            if mode:  # sub/superscript: the run's baseline shifted by 25 % of the font size
                r.font._rPr.set("baseline", "-25000" if mode == "sub" else "30000")


def _place(shape, left_px, top_px, width_px, height_px):
    shape.left, shape.top = int(left_px * EMU_PER_PX), int(top_px * EMU_PER_PX)
    shape.width, shape.height = int(width_px * EMU_PER_PX), int(height_px * EMU_PER_PX)


def _title_slide(prs, title: str, lines: list[str], notes: str) -> None:
    """The preset's title; its "what to look for" lines (20 pt); the settings line last (15 pt, grey)."""
    s = prs.slides.add_slide(prs.slide_layouts[0])  # "Title Slide": title + subtitle placeholders
    _place(s.shapes.title, 90, 150, 1740, 240)
    _set_text(s.shapes.title.text_frame, [(title, "")], 40, bold=True)
    sub = s.placeholders[1]
    _place(sub, 90, 420, 1740, 600)
    look, settings = lines[:-1], lines[-1:]
    head = [[("What to look for", "")]] if look else []
    _set_text(sub.text_frame, None, 20, paragraphs=head + [caption_runs(line) for line in look]
              + [[(line, "")] for line in settings])
    paras = sub.text_frame.paragraphs
    for p in paras:
        p.space_after = Pt(8)
    if head:
        paras[0].runs[0].font.bold = True
    if settings:
        for r in paras[-1].runs:
            r.font.size, r.font.color.rgb = Pt(15), RGBColor(0x55, 0x5F, 0x6D)
    s.notes_slide.notes_text_frame.text = notes


def _figure_slide(prs, png: bytes, title: str, caption: str, notes: str) -> None:
    s = prs.slides.add_slide(prs.slide_layouts[5])  # "Title Only"
    pic = s.shapes.add_picture(io.BytesIO(png), 0, 0, width=SLIDE_W_EMU, height=SLIDE_H_EMU)
    tree = s.shapes._spTree
    tree.remove(pic._element)
    tree.insert(2, pic._element)  # behind the title and caption (after nvGrpSpPr and grpSpPr)
    pic._element.nvPicPr.cNvPr.set("descr", " ".join(t for t, _ in title_runs(title)))  # alt text
    _place(s.shapes.title, 60, 18, 1800, TOP_PX - 30)
    _set_text(s.shapes.title.text_frame, title_runs(title), TITLE_PT, bold=True)
    s.shapes.title.text_frame.vertical_anchor = MSO_ANCHOR.BOTTOM  # close to the plot
    if caption:
        box = s.shapes.add_textbox(0, 0, 1, 1)
        _place(box, 60, 1080 - CAPTION_PX + 10, 1800, CAPTION_PX - 20)
        _set_text(box.text_frame, caption_runs(caption), CAPTION_PT, color=(0x44, 0x4C, 0x58))
        box.text_frame.vertical_anchor = MSO_ANCHOR.TOP
    s.notes_slide.notes_text_frame.text = notes


def _config_json(config) -> str:
    if config is None:
        return "null"
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    return json.dumps(config, indent=2, allow_nan=False)


def deck_bytes(views: dict[str, dict[str, go.Figure]], config=None, *, title: str = "Gradient dynamics",
               lines=(), scale: float = DEFAULT_SCALE, progress=None, render_images=None,
               provenance: dict | None = None) -> bytes:
    """The .pptx bytes: a title slide (``title``, ``lines``), then one slide per figure of every view.

    ``config`` (an ExperimentConfig or its dict) goes into every slide's notes as JSON; ``provenance``
    ({run: analysis.provenance record}, as ``view_figures_of(records=...)`` fills) adds what each run actually ran
    (T, B, loss, layer, files and their sha256, dropout) above it. ``render_images``
    (jobs, scale, on_done) -> [png bytes] defaults to ``analysis.export.render`` (kaleido + Chromium:
    ExportUnavailable without one). ``progress(fraction, message)`` after each rendered batch.
    """
    if render_images is None:
        ok, hint = export_available()
        if not ok:
            raise ExportUnavailable("the slide deck needs PNG images: " + hint)
        render_images = lambda jobs, scale, on_done: render(jobs, scale=scale, on_done=on_done)  # noqa: E731
    slides = [(view, name, fig) for view, figs in views.items() for name, fig in figs.items()]
    if not slides:
        raise ValueError("the deck has no figures: no view drew any (train first for the training view)")
    cfg_json = _config_json(config)
    ran = _ran_text(provenance)

    def done(n, total):
        if progress is not None:
            view, name, _ = slides[n - 1]
            progress(n / total, f"rendered slide {n}/{total} ({view}/{name})")

    pngs = render_images([(deck_figure(fig).to_dict(), "png") for _, _, fig in slides], scale, done)
    prs = Presentation()
    prs.slide_width, prs.slide_height = SLIDE_W_EMU, SLIDE_H_EMU
    _title_slide(prs, title, list(lines), f"{ran}Settings (ExperimentConfig JSON):\n{cfg_json}")
    for (view, name, fig), png in zip(slides, pngs):
        vt = VIEW_TITLES.get(view, view)
        notes = f"View: {vt} ({view}) · figure: {name}\n\n{ran}Settings (ExperimentConfig JSON):\n{cfg_json}"
        meta = fig.layout.meta if isinstance(fig.layout.meta, dict) else {}
        if "sweep" in meta:  # an Atlas figure: its own sweep, not the page's settings
            axes = json.dumps(meta["sweep"].get("axes"), allow_nan=False)
            notes = (f"View: {vt} ({view}) · figure: {name}\n\nSweep axes: {axes}, seeds {meta['sweep'].get('seeds')}"
                     f"\n\nBase settings of the sweep (ExperimentConfig JSON):\n{_config_json(meta.get('config'))}")
        _figure_slide(prs, png, figure_title(fig, f"{vt}: {name}"), figure_caption(fig, view), notes)
    buf = io.BytesIO()
    prs.save(buf)
    return buf.getvalue()


def _ran_text(provenance: dict | None) -> str:
    """'What ran' lines for the notes, one block per run ({run: provenance record}); '' when none is given."""
    blocks = [f"What ran ({run}):\n" + "\n".join(provenance_lines(rec))
              for run, rec in (provenance or {}).items() if rec]
    return "".join(b + "\n\n" for b in blocks)


def write_deck(config, path: str, *, preset: str | None = None, variant: dict | None = None,
               scale: float = DEFAULT_SCALE, progress=None, views=None, results: dict | None = None) -> str:
    """Analyse ``config`` (every view, as ``export_all`` does; the preset's variant too when given), write
    the deck to ``path`` and return it. The analysis is the first 30 % of ``progress``, the slides the rest.
    ``results``: analysed already (your own step, ``--step``), drawn as they are."""
    if not str(path).lower().endswith(".pptx"):
        raise ValueError(f"--pptx {path!r}: the file name must end in .pptx")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ValueError(f"--pptx {path!r}: the folder {folder!r} does not exist or is not writable")
    title, lines = heading(config, preset, variant)  # a bad preset fails before any work
    ok, hint = export_available()
    if not ok:
        raise ExportUnavailable("the slide deck needs PNG images: " + hint)
    records: dict = {}
    views = view_figures_of(config, scaled(progress, 0.0, 0.3), variant=variant, records=records, views=views,
                            results=results)
    ran = [v["config"] for v in records.values() if v.get("config")]
    if (config.state_dict_path or config.inputs_path) and len(ran) == 1:
        from .config import ExperimentConfig
        title, lines = heading(ExperimentConfig.from_dict(ran[0]), preset, variant)  # a file's own T, B, loss
    data = deck_bytes(views, config, title=title, lines=lines, scale=scale, progress=scaled(progress, 0.3, 1.0),
                      provenance={k: v["provenance"] for k, v in records.items()})
    with open(path, "wb") as fh:
        fh.write(data)
    return path


__all__ = ["deck_bytes", "write_deck", "heading", "deck_figure", "title_runs", "caption_runs", "figure_caption", "variant_label", "TOP_PX",
           "CAPTION_PX", "DEFAULT_SCALE"]
