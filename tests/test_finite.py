"""Nothing non-finite reaches LAPACK (analysis.finite): the guarded calls against torch's, the notes naming the
entries, every analysis and view on NaN / Inf weights in a subprocess (an abort is an exit code there), and the
eigensolver's fallback (init=spectral, init_scale=100)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis import ExperimentConfig, finite, run_experiment

ROOT = Path(__file__).resolve().parents[1]
slow = pytest.mark.skipif(not os.environ.get("RUN_SLOW"),
                          reason="every figure of every case (~30 s of CPU): RUN_SLOW=1")


def _batch_with_bad():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(4, 5, 5, generator=g, dtype=torch.float64)
    M[1, 2, 3] = float("nan")
    M[3, 0, 4] = float("inf")
    return M


def test_guarded_calls_equal_torch_on_finite_matrices_and_nan_on_the_others():
    M = _batch_with_bad()
    ok = [0, 2]
    close = lambda a, b: torch.allclose(a, b, rtol=1e-12, atol=1e-12)  # noqa: E731 - batch sizes round apart
    assert close(finite.svdvals(M)[ok], torch.linalg.svdvals(M[ok]))
    assert finite.svdvals(M)[[1, 3]].isnan().all()
    q = finite.qr(M)
    ref = torch.linalg.qr(M[ok])
    assert close(q.Q[ok], ref.Q) and close(q.R[ok], ref.R) and q.R[[1, 3]].isnan().all()
    U, S, Vh = finite.svd(M)
    assert torch.allclose((U[ok] * S[ok].unsqueeze(-2)) @ Vh[ok], M[ok]) and S[1].isnan().all()
    assert finite.eigvals(M[1]).isnan().all() and close(finite.eigvals(M[0]), torch.linalg.eigvals(M[0]))
    s2 = finite.sigma_max_sq(M)
    assert torch.allclose(s2[ok], torch.linalg.svdvals(M[ok])[:, 0] ** 2, rtol=1e-12) and s2[[1, 3]].isnan().all()


def test_sigma_max_sq_falls_back_to_svdvals_where_the_eigensolver_fails(monkeypatch):
    M = _batch_with_bad()

    def fails(*a, **k):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")
    monkeypatch.setattr(torch.linalg, "eigvalsh", fails)
    s2 = finite.sigma_max_sq(M)
    assert torch.allclose(s2[[0, 2]], torch.linalg.svdvals(M[[0, 2]])[:, 0] ** 2, rtol=1e-12)
    assert s2[[1, 3]].isnan().all()


def test_describe_names_the_entries():
    W = torch.zeros(8, 4)
    assert finite.describe(W, "w") is None
    W[3, 1] = float("nan")
    assert finite.describe(W, "weight_hh_l0") == "weight_hh_l0: 1 NaN at [3, 1]"
    W[0, :] = float("-inf")
    assert finite.describe(W, "w") == "w: 1 NaN at [3, 1], 4 Inf (first at [0, 0], [0, 1], [0, 2])"


def test_spectral_init_at_100_runs_where_eigh_did_not_converge():
    """Issue 20 (7): init=spectral, init_scale=100, an LSTM at every lag in float32 made linalg.eigh raise 'failed to
    converge' on the Gram matrix of a product; sigma_max there now comes from svdvals (the same number)."""
    from analysis.presets import DEFAULT_PRESET, PRESETS
    c = PRESETS[DEFAULT_PRESET].config.replace(init="spectral", init_scale=100, compare=(), cell="lstm",
                                               jacobian_lags="all", seq_len=60)
    r = run_experiment(c)
    assert np.isfinite(r.jac.state_spectral_norm).all() and np.isfinite(r.jac.cell_full).all()
    # the full state's sigma_max is at least the h->h block's and the c->c block's (a submatrix's norm)
    assert (r.jac.state_spectral_norm >= np.maximum(r.jac.spectral_norm, r.jac.cell_full) - 1e-4).all()


def test_cli_run_on_a_state_dict_with_a_nan(tmp_path, cli_inproc):
    for value in ("nan",):  # Inf: the probe below
        sd = torch.nn.GRU(2, 6).state_dict()
        sd["weight_hh_l0"][5, 1] = float(value)
        path = tmp_path / f"gru_{value}.pt"
        torch.save(sd, path)
        out = tmp_path / "r.json"
        r = cli_inproc("run", "--load-state-dict", path, "--seq-len", "8", "--batch-size", "2", "--json", out)
        assert r.returncode == 0, r.stderr[-2000:]
        d = json.loads(out.read_text())
        kind = "NaN" if value == "nan" else "Inf"
        assert any(f"weight_hh_l0: 1 {kind} at [5, 1]" in n for n in d["notes"])
        assert d["spectral_radius"]["r"] is None and d["spectral_radius"]["z"] is not None


def _probe(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tests" / "nonfinite_probe.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _check_probe(r):
    assert r.returncode == 0, f"exit {r.returncode}: {r.stdout[-1500:]}\n{r.stderr[-3000:]}"
    lines = r.stdout.splitlines()
    assert lines[-1] == "done"
    # the reproduction: the note names the entry, the spectra of the gate block holding it are NaN (null), the
    # other blocks' are torch's eigenvalues
    out = json.loads(lines[0].removeprefix("repro "))
    assert any("weight_hh_l0: 1 NaN at [3, 7]" in n for n in out["notes"]), out["notes"]
    assert out["radius"]["i"] is None  # the NaN sits in the input gate's block (rows 0..31)
    for g, v in out["ref"].items():
        assert out["radius"][g] == pytest.approx(v, rel=1e-12)
    assert out["nonfinite"] is not None
    ok = [ln for ln in lines if ln.startswith("ok ") and not ln.startswith("ok stacked")]
    assert len(ok) == 3 * 4 * 2  # rnn, lstm, gru x weight_ih, weight_hh, bias_ih, bias_hh x NaN, Inf
    assert len([ln for ln in lines if ln.startswith("ok stacked")]) == 4  # 2-layer bidirectional LSTM cases
    assert all("non-finite values given" in ln for ln in ok)


def test_every_analysis_and_view_on_nan_and_inf_in_each_parameter():
    """tests/nonfinite_probe.py in a subprocess: the reproduction (analyze() on LSTM(8, 32) with one NaN in
    weight_hh_l0), every analysis on each parameter with a NaN and an Inf, every view of analyze()'s result on
    weight_hh_l0's (every view of every case: the slow test below)."""
    _check_probe(_probe())


@slow
def test_every_view_of_every_case():
    _check_probe(_probe("all"))


TINY = ExperimentConfig(cell="lstm", hidden_size=6, seq_len=8, batch_size=2, jacobian_lags="all")


def test_float32_matrices_lapack_refuses_are_retried_in_float64(monkeypatch):
    orig = torch.linalg.svdvals

    def no_float32(M, *a, **k):
        if M.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
        return orig(M, *a, **k)
    M = torch.randn(3, 5, 5)
    ref = orig(M.double()).float()
    monkeypatch.setattr(torch.linalg, "svdvals", no_float32)
    got = finite.svdvals(M)
    assert got.dtype == torch.float32 and torch.equal(got, ref)


def test_a_lapack_failure_names_the_setting_api(monkeypatch):
    """Issue 20 (7): an engine failure caused by a setting names the setting (init_scale, dtype), not LAPACK."""
    def never(*a, **k):
        raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
    monkeypatch.setattr(torch.linalg, "svdvals", never)
    with pytest.raises(ValueError) as e:
        run_experiment(TINY.replace(init="spectral", init_scale=100))
    msg = str(e.value)
    assert isinstance(e.value, finite.NumericalFailure) and "\n" not in msg
    assert "init_scale" in msg and "(0, 100]" in msg and "dtype=float64" in msg and "_LinAlgError" not in msg


def test_a_lapack_failure_names_the_setting_cli(monkeypatch, cli_inproc):
    """The same on the command line (its main() in this process, as the other CLI tests): one line, status 2."""
    def never(*a, **k):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")
    monkeypatch.setattr(torch.linalg, "svdvals", never)
    r = cli_inproc("run", "--cell", "lstm", "--hidden-size", "6", "--seq-len", "8", "--batch-size", "2",
                   "--init", "spectral", "--init-scale", "100")
    assert r.returncode == 2 and r.stdout == ""
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "init_scale" in err, err
