"""Charts with their export buttons: PNG / SVG / PDF (1920x1080 slides via kaleido), CSV and JSON per figure,
one zip per view, and slide decks. Files are built when the button is clicked (``st.download_button(data=callable)``),
decks on the page with a progress bar, then offered for download; the file-building functions come from
``analysis.export`` and ``analysis.deck`` (imported lazily)."""
from __future__ import annotations

import copy
import json

import streamlit as st

from analysis.figures import MODEBAR_CONFIG

MIME = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf", "csv": "text/csv",
        "json": "application/json", "zip": "application/zip",
        "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation"}


def _export():
    import analysis.export as export
    return export


@st.cache_resource(show_spinner=False)
def export_status() -> tuple[bool, str]:
    """(True, "") when PNG/SVG/PDF can be rendered on this server, else (False, how to install Chromium)."""
    try:
        return _export().export_available()
    except ImportError as e:  # analysis.export or kaleido missing
        return False, f"static export is unavailable ({e}); install kaleido (pip install kaleido) and Chromium " \
                      "(apt-get install -y chromium)"


def modebar_config(name: str) -> dict:
    cfg = copy.deepcopy(MODEBAR_CONFIG)
    cfg["toImageButtonOptions"]["filename"] = name
    return cfg


def _image(fig, fmt):
    return lambda: _export().figure_bytes(fig, fmt)


def _csv(fig):
    return lambda: _export().figure_csv(fig)


def _json(fig):
    return lambda: _export().figure_json(fig)


def downloads(view: str, name: str, fig) -> None:
    """The export buttons of one figure (in a popover)."""
    ok, hint = export_status()
    with st.popover(f"Export {name}", width="content"):
        cols = st.columns(5)
        if ok:
            for i, fmt in enumerate(("png", "svg", "pdf")):
                cols[i].download_button(fmt.upper(), data=_image(fig, fmt), file_name=f"{name}.{fmt}",
                                        mime=MIME[fmt], key=f"dl_{view}_{name}_{fmt}", on_click="ignore",
                                        help="1920x1080 slide" if fmt == "png" else None)
        cols[3].download_button("CSV", data=_csv(fig), file_name=f"{name}.csv", mime=MIME["csv"],
                                key=f"dl_{view}_{name}_csv", on_click="ignore")
        cols[4].download_button("JSON", data=_json(fig), file_name=f"{name}.json", mime=MIME["json"],
                                key=f"dl_{view}_{name}_json", on_click="ignore")
        if not ok:
            st.caption(f"PNG/SVG/PDF files cannot be made on this server: {hint}. The camera button in the "
                       "chart's toolbar still downloads a 1920x1080 PNG drawn by your browser.")
        else:
            st.caption("The camera button in the chart's toolbar also saves a 1920x1080 PNG from your browser.")


def chart(view: str, name: str, fig) -> None:
    st.plotly_chart(fig, key=f"chart_{view}_{name}", config=modebar_config(name), theme=None)
    downloads(view, name, fig)


def zip_button(view: str, figs: dict, config) -> None:
    if not figs:
        return
    ok, hint = export_status()
    label = f"Download every figure of this view (zip: {'PNG, SVG, PDF, ' if ok else ''}CSV, JSON, config)"
    st.download_button(label, data=lambda: _export().view_zip(figs, config.to_dict()), file_name=f"{view}.zip",
                       mime=MIME["zip"], key=f"dl_{view}_zip", on_click="ignore")
    if not ok:
        st.caption(f"The zip holds the data only: {hint}.")


def provenance_of(results: dict) -> dict:
    """{run: what it actually ran (its ``analysis.provenance`` record)}: the deck's notes get it as from
    ``export --pptx`` (``view_figures_of(records=...)``)."""
    return {key: r.provenance for key, r in results.items() if getattr(r, "provenance", None)}


def deck_button(key: str, views, settings, label: str, file_name: str, *, heading=None, config=None,
                stamp: str | None = None, provenance=None) -> None:
    """A .pptx built on the page (``analysis.deck``): a button that renders the slides under ``st.status`` with a
    bar naming the slide being drawn, then the file's download button (kept for these settings).

    ``views``: {view: {name: figure}}, or a callable returning it (called when the button is clicked).
    ``heading`` (title, lines) and ``config`` (what the notes record) default to the preset's and the settings';
    ``stamp`` says which settings the built deck belongs to (default: the config and the variant).
    ``provenance``: {run: analysis.provenance record} (``provenance_of(results)``), or a callable returning it
    (called after ``views``): each run's "what ran" lines in the notes, as ``export --pptx`` writes them."""
    ok, hint = export_status()
    if not ok:
        st.caption(f"Slide decks need PNG images, which cannot be made on this server: {hint}.")
        return
    cfg = settings.config if config is None else config
    if stamp is None:
        stamp = json.dumps([cfg.to_dict() if hasattr(cfg, "to_dict") else cfg, settings.variant or {}],
                           sort_keys=True, default=str)
    slot = f"deck_{key}"
    if st.button(label, key=f"build_{key}_pptx", help="16:9 slides: the title and what to look for, then one figure "
                 "per slide with its own caption and the settings in the notes. Rendered here, with progress; the "
                 "download button appears when it is ready."):
        st.session_state[slot] = (stamp, _build_deck(views, settings, cfg, heading, file_name, provenance))
    built = st.session_state.get(slot)
    if built is not None and built[0] == stamp and built[1] is not None:
        data, n = built[1]
        st.download_button(f"Download {file_name} ({n} slides, {len(data) / 2 ** 20:.1f} MB)", data=data,
                           file_name=file_name, mime=MIME["pptx"], key=f"dl_{key}_pptx", on_click="ignore")


def _build_deck(views, settings, cfg, heading, file_name: str, provenance=None):
    """(pptx bytes, slides) rendered under an ``st.status`` box whose bar names each slide; None on failure (said)."""
    from analysis import deck
    with st.status(f"Building {file_name}: collecting the figures", expanded=True) as status:
        bar = st.progress(0.0, text="collecting the figures of every view")
        try:
            v = views() if callable(views) else views
            ran = provenance() if callable(provenance) else provenance
            n = sum(len(f) for f in v.values())
            title, lines = heading if heading is not None else \
                deck.heading(settings.config, settings.preset, settings.variant or None)
            status.update(label=f"Building {file_name}: rendering {n} slides")

            def progress(fraction, message):
                bar.progress(min(1.0, fraction), text=message)
            data = deck.deck_bytes(v, cfg, title=title, lines=lines, progress=progress, provenance=ran)
        except Exception as e:  # noqa: BLE001 - one sentence on the page, never a traceback
            status.update(label=f"{file_name} could not be built: {' '.join(str(e).split())[:300]}", state="error")
            return None
        bar.progress(1.0, text=f"{n} slides rendered")
        status.update(label=f"{file_name} is ready: {n} slides + the title slide", state="complete", expanded=False)
    return data, n + 1
