"""examples/quickstart.ipynb runs top to bottom in a fresh kernel (nbclient) from its own folder, as a reader runs it
from a clone (the first cell finds the repository), and from what ``pip install .`` builds (a target folder, the only
path to the code, run from an empty folder: the first cell then leaves sys.path alone); its last cell checks every
claim of its text against its own numbers. Also ExperimentResult's notebook face: figures(view), the summary repr and its HTML."""
from __future__ import annotations

import hashlib
import html
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from analysis import ExperimentConfig, run_experiment
from analysis.figures import VIEWS
from conftest import source_copy

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


def execute(cwd: Path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def texts(nb) -> list[str]:
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            out.append(o.get("text", "") if o.output_type == "stream" else o.get("data", {}).get("text/plain", ""))
    return out


@pytest.fixture(scope="module")
def from_examples():
    """The notebook run from examples/ with this interpreter's kernel and the package not installed."""
    return execute(ROOT / "examples")


def test_the_example_notebook_runs_from_its_own_folder(from_examples):
    nb = from_examples
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert f"from {ROOT / 'analysis'}" in texts(nb)[0]  # the first cell found the repository one folder up
    htmls = [o["data"]["text/html"] for o in outputs if o.output_type == "execute_result" and "text/html" in o["data"]]
    assert any("memory horizon" in h for h in htmls)  # the result's summary shown as HTML
    plots = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(plots) == 2


def test_the_notebooks_text_holds_against_its_own_numbers(from_examples):
    """The last cell asserts each claim of the text; here the printed numbers are read back independently."""
    out = "\n".join(texts(from_examples))
    assert "every claim above holds" in out and "FAILS" not in out
    rows = dict(re.findall(r"^(RNN|LSTM, default init|LSTM, b_f = 3)\s+memory horizon: (\w+)", out, re.M))
    assert rows["RNN"] != "None" and rows["LSTM, default init"] != "None"  # both forget within the sequence
    assert int(rows["LSTM, default init"]) <= 2 * int(rows["RNN"])
    assert rows["LSTM, b_f = 3"] == "None"  # the biased LSTM carries the gradient across the whole sequence
    lost = dict(re.findall(r"^(RNN|LSTM, default init|LSTM, b_f = 3)\s.*gradient lost over T: 10\^([\d.]+)", out,
                           re.M))
    assert float(lost["RNN"]) > 5 and float(lost["LSTM, default init"]) > 5 and float(lost["LSTM, b_f = 3"]) < 2
    prose = " ".join("".join(c.source) for c in from_examples.cells if c.cell_type == "markdown")
    assert "keeps the gradient alive" not in prose  # the old claim the numbers denied
    assert "forgets about as fast as the RNN" in prose and "carries the gradient back across the whole" in prose


INSTALLED_CHECK = """\
import hashlib
import analysis, rnn_models
from analysis.tasks import SHIPPED_TEXT_PATH, char_corpus
corpus, vocab = char_corpus("shipped")
print("installed", Path(analysis.__file__).parent, Path(rnn_models.__file__).parent, SHIPPED_TEXT_PATH)
print("shipped text", len(corpus), vocab.size, hashlib.sha256(corpus.encode()).hexdigest())
"""


def _package_files() -> list[str]:
    """The packages' files as the repository holds them (git's list; without git, the tree less bytecode)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "analysis", "rnn_models", "dashboard", "gdlab"], cwd=ROOT,
                             capture_output=True, text=True, check=True, timeout=30).stdout
        return [f for f in out.split("\0") if f]
    except (OSError, subprocess.SubprocessError):
        return [str(p.relative_to(ROOT)) for d in ("analysis", "rnn_models", "dashboard", "gdlab")
                for p in (ROOT / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts]


def test_the_notebook_runs_from_a_pip_install(tmp_path, monkeypatch):
    """As a reader after ``pip install .`` (CI, issue 19): the package built from a copy of the repository into a
    target folder (offline: ``--no-deps --no-build-isolation --no-index``), the whole notebook run from an empty
    folder with that install as the only path to the code (PYTHONPATH=it). A cell appended here reads the shipped
    text from the install, and every file of the packages must have been installed: a module or data file that
    pyproject.toml leaves out fails this test."""
    site, run_in = tmp_path / "site", tmp_path / "elsewhere"
    run_in.mkdir()
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "--disable-pip-version-check", "--target", str(site),
                        str(source_copy(tmp_path / "src"))], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    missing = [f for f in _package_files() if not (site / f).is_file()]
    assert not missing, f"pip install . leaves out {missing}"

    monkeypatch.setenv("PYTHONPATH", str(site))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(INSTALLED_CHECK))
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(run_in)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors[0]["ename"] + ": " + errors[0]["evalue"]
    out = texts(nb)
    assert f"from {site / 'analysis'}" in out[0]  # the first cell found the install, not a repository
    assert "every claim above holds" in "\n".join(out) and "FAILS" not in "\n".join(out)
    assert out[-1].startswith(f"installed {site / 'analysis'} {site / 'rnn_models'} {site / 'analysis'}")
    from analysis.tasks import char_corpus
    corpus, vocab = char_corpus("shipped")  # the checkout's text, read in this process
    digest = hashlib.sha256(corpus.encode()).hexdigest()
    assert f"shipped text {len(corpus)} {vocab.size} {digest}" in out[-1]


def test_the_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code")


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
    assert f"lag {d['memory_horizon']}, from all 4 sequences" in text  # the horizon with its resolution
    import math
    ratio = math.log10(d["grad_norm"][0] / d["grad_norm"][-1])  # independent of the summary's log chain
    assert f"10^{ratio:.1f}" in text
    from analysis.alerts import alerts
    found = alerts(result)
    assert found and all(a.message in text for a in found)
    page = result._repr_html_()
    assert page.startswith("<div>") and "<table>" in page
    assert html.escape(found[0].message) in page and f"lag {d['memory_horizon']}" in page
