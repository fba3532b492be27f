"""Charts with their export buttons: PNG / SVG / PDF (1920x1080 slides via kaleido), CSV and JSON per figure,
and one zip per view. Files are built when the button is clicked (``st.download_button(data=callable)``);
the file-building functions come from ``analysis.export`` (imported lazily)."""
from __future__ import annotations

import copy

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


def deck_button(key: str, views, settings, label: str, file_name: str) -> None:
    """A .pptx download (``analysis.deck``): the preset's title slide, then one slide per figure of ``views``
    ({view: {name: figure}}, or a callable returning it, called when the button is clicked)."""
    ok, hint = export_status()
    if not ok:
        st.caption(f"Slide decks need PNG images, which cannot be made on this server: {hint}.")
        return

    def build() -> bytes:
        from analysis import deck
        v = views() if callable(views) else views
        title, lines = deck.heading(settings.config, settings.preset, settings.variant or None)
        return deck.deck_bytes(v, settings.config, title=title, lines=lines)
    st.download_button(label, data=build, file_name=file_name, mime=MIME["pptx"], key=f"dl_{key}_pptx",
                       on_click="ignore", help="16:9 slides: the preset's title and what to look for, then one "
                       "figure per slide with the view's guide as caption and the settings in the notes")
