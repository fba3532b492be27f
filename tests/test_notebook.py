"""examples/quickstart.ipynb runs top to bottom in a fresh kernel (nbclient), and ExperimentResult's notebook face:
figures(view), the summary repr and its HTML."""
from __future__ import annotations

import html
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from analysis import ExperimentConfig, run_experiment
from analysis.figures import VIEWS

ROOT = Path(__file__).resolve().parents[1]


def test_the_example_notebook_executes_without_error():
    nb = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    htmls = [o["data"]["text/html"] for o in outputs if o.output_type == "execute_result" and "text/html" in o["data"]]
    assert any("memory horizon" in h for h in htmls)  # the result's summary shown as HTML
    plots = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(plots) == 2


@pytest.fixture(scope="module")
def result():
    return run_experiment(ExperimentConfig(seq_len=30, hidden_size=8, batch_size=4))


def test_figures_of_a_view_are_the_dashboards(result):
    from analysis.figures import view_figures
    for view in VIEWS:
        mine, theirs = result.figures(view), view_figures(view, {"rnn": result})
        assert list(mine) == list(theirs)
        for name in mine:
            assert mine[name].to_json() == theirs[name].to_json()
    with pytest.raises(ValueError, match="view='nope'.*gradient-flow"):
        result.figures("nope")


def test_repr_and_html_summarise_cell_settings_horizon_and_alerts(result):
    d = result.to_dict()
    text = repr(result)
    assert text.startswith("ExperimentResult(") and "RNN (tanh)" in text and "T=30 · H=8 · B=4" in text
    assert f"k = {d['memory_horizon']}" in text
    import math
    ratio = math.log10(d["grad_norm"][0] / d["grad_norm"][-1])  # independent of the summary's log chain
    assert f"10^{ratio:.1f}" in text
    from analysis.alerts import alerts
    found = alerts(result)
    assert found and all(a.message in text for a in found)
    page = result._repr_html_()
    assert page.startswith("<div>") and "<table>" in page
    assert html.escape(found[0].message) in page and f"k = {d['memory_horizon']}" in page
