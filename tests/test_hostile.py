"""Hostile and careless visitors: URL query parameters, variants and uploaded configs each give one plain line and
never a traceback; no visitor input reaches the file system; the fallback cannot raise."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.config import ExperimentConfig
from rnn_models.config import ConfigError

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
SMALL = {"seq_len": "12", "hidden_size": "6", "batch_size": "4"}


def app(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def page_text(at: AppTest) -> str:
    return " ".join(e.value for e in at.error)


def assert_plain(at: AppTest, field: str) -> None:
    assert not at.exception, [e.value for e in at.exception]
    msg = page_text(at)
    assert field in msg, msg
    assert "Traceback" not in msg and len(msg) < 1500, msg[:300]
    assert at.get("plotly_chart"), "the page keeps showing the preset"


HOSTILE_URLS = [
    ({"compare": "rnn,lstm,gru", "hidden_size": "4096", "num_layers": "16", "bidirectional": "true",
      "seq_len": "100000", "batch_size": "4096"}, "memory"),
    ({"seq_len": "100000"}, "seq_len"),
    ({"hidden_size": "4096"}, "hidden_size"),
    ({"seq_len": "1000", "hidden_size": "512"}, "GFLOP"),
    ({"seq_len": "nan"}, "seq_len"),
    ({"init_scale": "nan"}, "init_scale"),
    ({"init_scale": "inf"}, "init_scale"),
    ({"lr": "-1"}, "lr"),
    ({"batch_size": "9" * 5001}, "batch_size"),
    ({"activation": "x" * 100_000}, "activation"),
    ({"state_dict_path": "/etc/shadow"}, "state_dict_path"),
    ({"inputs_path": "/proc/self/environ"}, "inputs_path"),
    ({"variant": "state_dict_path=/etc/passwd"}, "state_dict_path"),
    ({"variant": "inputs_path=/tmp/fifo"}, "inputs_path"),
    ({"variant": "a" * 50_000}, "variant"),
    ({"variant": "hidden_size=4096"}, "hidden_size"),
    ({"../../etc/passwd": "1"}, "unknown setting"),
    ({"bidirectional": "maybe"}, "bidirectional"),
    ({"compare": "rnn,rnn"}, "compare"),
    ({"task": "copy", "seq_len": "10"}, "seq_len"),
    ({"task": "charlm", "seq_len": "99999"}, "seq_len"),
]


@pytest.mark.parametrize("params,field", HOSTILE_URLS, ids=[str(i) for i in range(len(HOSTILE_URLS))])
def test_hostile_link_gives_one_plain_line(params, field):
    at = app(**{**{k: v for k, v in SMALL.items() if k not in params}, **params})
    assert_plain(at, field)


def test_repeated_url_key_is_said():
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["seed"] = ["1", "2"]
    at.run()
    assert_plain(at, "more than once")


HOSTILE_CONFIGS = [
    ("[" * 100_000, "nested too deeply"),
    ('{"seed": ' + "9" * 5001 + "}", "digits"),
    ('{"cell": "' + "x" * 2**20 + '"}', "at most"),  # over the 1 MiB settings-upload limit
    ('{"cell": "' + "x" * 500_000 + '"}', "cell"),
    ('{"init_scale": NaN}', "NaN"),
    ('{"lr": -Infinity}', "Infinity"),
    ('{"seed": 1, "seed": 2}', "twice"),
    ('{"hidden_size": "64"}', "hidden_size"),
    ('{"hidden_size": [64]}', "hidden_size"),
    ('{"hidden_size": 1e400}', "hidden_size"),
    ('{"colour": "red"}', "colour"),
    ('{"compare": {"rnn": 1}}', "compare"),
    ('{"state_dict_path": "/etc/shadow"}', "state_dict_path"),
    ('{"inputs_path": "/dev/zero"}', "inputs_path"),
    ('"a string"', "JSON object"),
    ("\xff\xfe", "JSON"),
]


@pytest.mark.parametrize("text,needle", HOSTILE_CONFIGS, ids=[str(i) for i in range(len(HOSTILE_CONFIGS))])
def test_hostile_config_text_gives_one_line(text, needle):
    from dashboard.controls import config_from_text
    with pytest.raises(ConfigError) as e:
        config_from_text(text.encode("utf-8", "surrogatepass") if needle != "JSON" else b"\xff\xfe")
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 500, msg[:200]
    if needle != "JSON":
        assert needle in msg, msg


def test_hostile_upload_through_the_page():
    at = app(**SMALL)
    for text in ("[" * 100_000, '{"seed": ' + "9" * 5001 + "}", '{"state_dict_path": "/etc/shadow"}'):
        at.sidebar.get("file_uploader")  # exists
        at.file_uploader(key="config_upload").upload("c.json", text.encode(), "application/json").run()
        assert not at.exception, [e.value for e in at.exception]
        assert "not applied" in page_text(at) and "Traceback" not in page_text(at)
        assert at.get("plotly_chart")


def test_no_sidebar_field_names_a_server_file(monkeypatch):
    """Uploads replaced the path fields: no widget is keyed by a path field, and a server path typed into every
    text field of the page opens nothing (the own-model names are module names inside an uploaded file)."""
    import numpy
    import torch
    from dashboard.controls.state import PATH_FIELDS
    opened = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: opened.append(a) or {})
    monkeypatch.setattr(numpy, "load", lambda *a, **k: opened.append(a) or numpy.zeros(1))
    at = app(**SMALL)
    keys = [w.key for kind in ("text_input", "text_area", "selectbox", "number_input") for w in at.get(kind)]
    assert keys and not set(keys) & set(PATH_FIELDS), keys
    texts = list(at.text_input)
    assert {"own_module", "own_readout", "own_embedding"} <= {w.key for w in texts}
    for w in texts:
        w.input("/etc/passwd")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not opened and at.get("plotly_chart")


def test_path_fields_allowed_on_the_command_line_only():
    cfg = ExperimentConfig.from_json(json.dumps({"state_dict_path": "/x.pt"}))  # the CLI and API still read files
    assert cfg.state_dict_path == "/x.pt"
