"""The direction of imports (shared/design.md): dashboard -> analysis -> rnn_models, and neither analysis nor
rnn_models imports Streamlit. One fresh interpreter imports every module of both packages and runs the export
helpers (which load plotly and kaleido lazily), then lists what it loaded."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CODE = r"""
import importlib, json, pkgutil, sys
import analysis, rnn_models
names = []
for pkg in (rnn_models, analysis):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if m.name != "analysis.__main__":
            importlib.import_module(m.name)
            names.append(m.name)
import plotly.graph_objects as go
import analysis.export as e
f = go.Figure(go.Scatter(y=[1, 2]), layout={"meta": {"cell": "rnn"}})
e.slide_figure(f); e.figure_csv(f); e.figure_json(f); e.export_available()
import analysis.__main__  # the command line's module too (imported, not run)
print(json.dumps({"imported": names, "loaded": sorted(m for m in sys.modules if m.split(".")[0] in
                  ("streamlit", "dashboard"))}))
"""


def test_analysis_and_rnn_models_never_import_streamlit_or_the_dashboard():
    r = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, timeout=180,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["loaded"] == [], out["loaded"]
    for name in ("analysis.figures.atlas", "analysis.sweep_cli", "analysis.export", "analysis.deck",
                 "analysis.presets", "analysis.alerts", "rnn_models.cells.lstm"):
        assert name in out["imported"], name
    assert len(out["imported"]) > 60  # every module of both packages, not a few
