"""The "Your model" sidebar section: upload a trained model's state_dict (and inputs, targets, h0) and see that one
model in every view. Files stay in memory (st.file_uploader bytes, size-limited); nothing a visitor types names a
file on the server. The analysis is ``analysis.own_model.analyse_files``, run through the scheduler's door like
every other analysis: first its cost is estimated on its real shapes (the file's architecture, T and B of the
uploaded inputs, or of the link's settings when none) and checked against the host's limits; then it takes a slot
(background kind when longer than a first chart) under this session's id, with its place in line and a progress
bar drawn in the page, so a visitor who leaves stops it at the engine's next progress call. Results go to the
shared byte cache, keyed by the files' SHA-256 and the settings."""
from __future__ import annotations

import hashlib
import os

import streamlit as st

from analysis.config import ExperimentConfig
from analysis.limits import Cost
from rnn_models.cells import cell_type
from rnn_models.config import ConfigError

from . import compute, remote, scheduler

UPLOAD_MB = 50  # MiB per file: shown by each uploader, Streamlit's server.maxUploadSize (.streamlit/config.toml, gdlab)
UPLOAD_LIMIT = UPLOAD_MB * 2**20  # bytes per file, checked again on the bytes received
# the architecture fields back at ExperimentConfig's defaults: the file decides them
ARCH_DEFAULTS = {f: getattr(ExperimentConfig(), f) for f in ("cell", "compare", "hidden_size", "input_size",
                                                             "num_layers", "bidirectional", "layer_norm", "peephole",
                                                             "task", "truncate")}
HELP = ("Save the weights with torch.save(model.state_dict(), 'model.pt') (the whole model's: the recurrent "
        "module is found by its weight_ih_l0 keys). Inputs: (T, B, I) floats, or token ids (T, B) with the "
        "embedding's name. Targets score the readout's outputs: class ids -> cross-entropy, floats -> MSE.")


def sidebar_section() -> None:
    """The uploads and names, drawn inside the sidebar."""
    ss = st.session_state
    with st.expander("Your model", expanded=ss.get("own_sd") is not None):
        st.caption(HELP)
        st.file_uploader("state_dict (.pt)", type=["pt", "pth", "bin"], key="own_sd", max_upload_size=UPLOAD_MB)
        st.file_uploader("inputs (.npy / .pt)", type=["npy", "pt"], key="own_inputs", max_upload_size=UPLOAD_MB,
                         help="(T, B, I), or (B, T, I) with batch-first; token ids (T, B) with an embedding. "
                              "Without inputs: seeded N(0, 1) inputs of the sidebar's T and B.")
        st.text_input("recurrent module (when the file has several)", key="own_module", placeholder="rnn")
        st.text_input("embedding (nn.Embedding in the file)", key="own_embedding", placeholder="encoder")
        st.text_input("readout (nn.Linear in the file)", key="own_readout", placeholder="decoder")
        st.file_uploader("targets (.npy / .pt)", type=["npy", "pt"], key="own_targets", max_upload_size=UPLOAD_MB,
                         help="class ids (T, B) or (B,), or floats (T, B, O) or (B, O)")
        st.file_uploader("h0 (.pt: h0, or the tuple (h0, c0))", type=["npy", "pt"], key="own_h0",
                         max_upload_size=UPLOAD_MB)
        st.checkbox("inputs are batch-first (B, T, I)", key="own_batch_first")


def _file(key: str):
    f = st.session_state.get(key)
    if f is None:
        return None
    if f.size > UPLOAD_LIMIT:
        raise ConfigError(f"{f.name}: {f.size / 2**20:.1f} MiB is over the {UPLOAD_MB} MiB upload limit")
    return f.name, f.getvalue()


def _name(key: str) -> str | None:
    v = (st.session_state.get(key) or "").strip()
    return v or None


def _run(config: ExperimentConfig, sd: bytes, arr: dict, names: tuple, progress=None, cost=None) -> dict:
    from analysis.own_model import analyse_files
    kw = dict(inputs=arr["inputs"], targets=arr["targets"], h0=arr["h0"], names=dict(names))
    if remote.enabled():  # one Ray task of one CPU (the bytes travel with it)
        r = remote.call(analyse_files, config.replace(threads=1), sd, check=remote.ticker(progress, cost), **kw)
    else:
        r = analyse_files(config, sd, progress=progress, **kw)
    return {r.config.cell: r}


def real_config(config: ExperimentConfig, sd: bytes, inputs, names: tuple) -> ExperimentConfig:
    """The config the analysis will run: the file's architecture, and T, B of the inputs (else the link's).

    From the files' metadata alone (``analysis.upload_limits.upload_config``: zip records size-checked, no
    pickles, no tensor materialised: a 2 KB file of zero-stride tensors declaring H = 4096 costs nothing here);
    errors are one line."""
    from analysis.upload_limits import upload_config
    return upload_config(config, sd, inputs, dict(names))


def upload_cost(config: ExperimentConfig, sd: bytes, inputs, names: tuple) -> Cost:
    """The estimate on the real shapes, checked against the host's limits (LimitExceeded: one line), with the
    Jacobian detail the analysis will run (analysis.own_model.check_own: auto is light above a size)."""
    from analysis.own_model import check_own
    return check_own(real_config(config, sd, inputs, names), None)[2]


def _key(config_json: str, sd: bytes, arr: dict, names: tuple) -> str:
    h = hashlib.sha256(config_json.encode())
    for part in (sd, *(a[0] if a else b"" for a in arr.values())):
        h.update(hashlib.sha256(part).digest())
    h.update(repr(names).encode())
    return "upload:" + h.hexdigest()


def analyse_upload(config: ExperimentConfig) -> dict | None:
    """{cell: result} of the uploaded model, or None when no state_dict was uploaded; ConfigError (one line)."""
    sd = _file("own_sd")
    if sd is None:
        return None
    files = {k: _file(f"own_{k}") for k in ("inputs", "targets", "h0")}
    recorded = {f"{k}_path": f"upload:{f[0]}" for k, f in files.items() if f is not None and k != "inputs"}
    cfg = config.replace(**ARCH_DEFAULTS, state_dict_path=f"upload:{sd[0]}", module=_name("own_module"),
                         readout=_name("own_readout"), embedding=_name("own_embedding"),
                         batch_first=bool(st.session_state.get("own_batch_first")), inputs_path=None,
                         targets_path=recorded.get("targets_path"), h0_path=recorded.get("h0_path"))
    # (the uploads' names are a record in the config; nothing opens them)
    if not -16 <= cfg.layer <= 15:
        cfg = cfg.replace(layer=-1)
    names = (("state_dict", f"upload {sd[0]}"),) + tuple((k, f"upload {f[0]}") for k, f in files.items() if f)
    arr = {k: (f[1], os.path.splitext(f[0])[1]) if f else None for k, f in files.items()}
    key = _key(cfg.to_json(), sd[1], arr, names)
    hit = scheduler.CACHE.get(key)
    if hit is not None:
        return hit
    cost = upload_cost(cfg, sd[1], arr["inputs"], names)
    bar = st.empty()

    def wait(position: int) -> None:
        bar.progress(0.0, text=f"Your model ({cost.describe()}): waiting for a free slot: "
                               f"{scheduler.SLOTS.line_text(position)}"[:300])

    def progress(fraction: float, text: str) -> None:
        bar.progress(min(1.0, max(0.0, float(fraction))), text=f"Your model: {text}"[:200])

    kind = scheduler.BACKGROUND if cost.gflop > compute.FIRST_CHART_GFLOP else scheduler.INTERACTIVE
    try:
        value, _ = scheduler.run_shared(key, lambda: _run(cfg, sd[1], arr, names, progress, cost), wait,
                                        visitor=compute.visitor(), kind=kind, cost=cost,
                                        label="your model's analysis")
    finally:
        bar.empty()
    return value


def header(results: dict) -> None:
    """What the file decided, above the views."""
    r = next(iter(results.values()))
    c = r.config
    f = st.session_state.get("own_sd")
    st.markdown(f"**Your model** `{f.name if f else ''}` · {c.cell.upper()}"
                + (f" ({c.activation})" if "activation" in cell_type(c.cell).settings else "")
                + f" · {c.num_layers} layer{'s' if c.num_layers > 1 else ''}" + (" · bidirectional" if c.bidirectional
                                                                              else "")
                + f" · I={c.input_size} · H={c.hidden_size} · T={c.seq_len} · B={c.batch_size} · {c.dtype}"
                + f" · layer analysed {c.analysed_layer} · loss {r.spec.name} ({c.loss_steps} steps)")
    decided = [n for n in r.notes if n.startswith(("the file decided", "readout", "embedding", "loss:", "inputs",
                                                     "nn.RNN", "initial state"))]
    decided = [n.removeprefix("the file decided: ") for n in decided]
    st.info("**What the file decided.** " + "  \n".join(decided) + "  \n*The sidebar's model and task settings "
            "do not apply to an uploaded model; its analysis settings (precision, layer, lags, ...) do. Remove the "
            "state_dict upload to return to the presets.*")
