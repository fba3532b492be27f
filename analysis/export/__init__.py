"""Static exports of the dashboard's figures: PNG/SVG/PDF (slide-ready, 1920x1080) + CSV/JSON data + zips.

    images.py   figure_bytes(fig, "png"|"svg"|"pdf"), slide_figure, export_available, png_size: kaleido in a
                headless Chromium, the figure on a 16:9 1920x1080 slide
    tables.py   figure_csv(fig), figure_json(fig), figure_config(fig): the numbers, no browser needed
    bundles.py  view_zip(figs, config, formats), view_figures_of(config), export_all(config, out_dir, formats)

The slide deck (.pptx) is written by ``analysis.deck`` from the same rendered images.
"""
from .bundles import FORMATS, export_all, scaled, view_figures_of, view_zip
from .images import (BROWSER_FORMATS, INSTALL_HINT, SLIDE_HEIGHT, SLIDE_WIDTH, ExportUnavailable, export_available,
                     figure_bytes, png_size, render, slide_figure)
from .tables import figure_config, figure_csv, figure_json, plain_name

__all__ = ["ExportUnavailable", "export_available", "figure_bytes", "figure_csv", "figure_json", "view_zip",
           "export_all", "view_figures_of", "slide_figure", "figure_config", "png_size", "render", "plain_name",
           "scaled", "FORMATS", "BROWSER_FORMATS", "INSTALL_HINT", "SLIDE_WIDTH", "SLIDE_HEIGHT"]
