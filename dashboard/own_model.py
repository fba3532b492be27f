"""The "Your model" sidebar section: upload a trained model's state_dict (and inputs, targets, h0) and see that one
model in every view. Files stay in memory (st.file_uploader bytes, size-limited); nothing a visitor types names a
file on the server. The analysis is ``analysis.own_model.analyse_files``, cached on the files' bytes."""
from __future__ import annotations

import os

import streamlit as st

from analysis.config import ExperimentConfig
from rnn_models.config import ConfigError

UPLOAD_MB = 50  # MiB per file: shown by each uploader, Streamlit's server.maxUploadSize (.streamlit/config.toml, gdlab)
UPLOAD_LIMIT = UPLOAD_MB * 2**20  # bytes per file, checked again on the bytes received
ARCH_DEFAULTS = {"cell": "rnn", "compare": (), "hidden_size": 64, "input_size": None, "num_layers": 1,
                 "bidirectional": False, "layer_norm": False, "peephole": False, "task": "random", "truncate": 0}
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


@st.cache_data(max_entries=4, show_spinner=False)
def _analyse(config_json: str, sd: bytes, inputs, targets, h0, names: tuple) -> dict:
    from analysis.own_model import analyse_files
    r = analyse_files(ExperimentConfig.from_json(config_json), sd, inputs=inputs, targets=targets, h0=h0,
                      names=dict(names))
    return {r.config.cell: r}


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
    return _analyse(cfg.to_json(), sd[1], arr["inputs"], arr["targets"], arr["h0"], names)


def header(results: dict) -> None:
    """What the file decided, above the views."""
    r = next(iter(results.values()))
    c = r.config
    f = st.session_state.get("own_sd")
    st.markdown(f"**Your model** `{f.name if f else ''}` · {c.cell.upper()}"
                + (f" ({c.activation})" if c.cell == "rnn" else "")
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
