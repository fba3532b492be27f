"""Tests for analysis/tasks.py: shapes, determinism, task structure, chance levels."""

import math

import numpy as np
import pytest
import torch

from analysis import tasks
from analysis.tasks import (
    TASKS,
    CharVocab,
    TaskSpec,
    char_corpus,
    load_inputs,
    make_batch,
    perplexity,
    random_readout,
    task_spec,
    temporal_order_windows,
)

# (name, seq_len) valid for every task
CASES = [("random", 7), ("adding", 12), ("copy", 25), ("temporal-order", 20), ("charlm", 15)]


def _one_line_naming(exc: pytest.ExceptionInfo, *words: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


# --------------------------------------------------------------------------- #
# shapes, dtypes, determinism
# --------------------------------------------------------------------------- #
def test_tasks_tuple():
    assert TASKS == ("random", "adding", "copy", "temporal-order", "charlm")


@pytest.mark.parametrize("name,T", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_and_dtypes(name, T, dtype):
    B = 5
    b = make_batch(name, T, B, seed=0, input_size=3, dtype=dtype)
    spec = b.spec
    assert isinstance(spec, TaskSpec) and spec.name == name
    assert spec == task_spec(name, T, input_size=3)
    assert b.inputs.shape == (T, B, spec.input_size)
    assert b.inputs.dtype == dtype
    expected_targets = {
        "random": None,
        "adding": ((B,), dtype),
        "copy": ((T, B), torch.long),
        "temporal-order": ((B,), torch.long),
        "charlm": ((T, B), torch.long),
    }[name]
    if expected_targets is None:
        assert b.targets is None
    else:
        assert (tuple(b.targets.shape), b.targets.dtype) == expected_targets
    y = torch.randn(T, B, spec.output_size, dtype=dtype, requires_grad=True)
    per_seq = b.loss_per_sequence(y)
    assert per_seq.shape == (B,) and per_seq.dtype == dtype
    loss = b.loss(y)
    assert loss.shape == () and torch.allclose(loss, per_seq.mean())
    loss.backward()
    assert torch.isfinite(y.grad).all()


def test_spec_fields():
    assert task_spec("random", 5, input_size=3) == TaskSpec("random", 3, 1, "last", 0.0, "probe", 1)
    assert task_spec("adding", 10) == TaskSpec("adding", 2, 1, "last", 1 / 6, "regression", 2)
    s = task_spec("copy", 30, input_size=99)
    assert (s.input_size, s.output_size, s.loss_steps, s.kind, s.min_seq_len) == (10, 10, "all", "classification", 21)
    assert s.chance_loss == pytest.approx(10 * math.log(8) / 30)
    s = task_spec("temporal-order", 100)
    assert (s.input_size, s.output_size, s.loss_steps, s.min_seq_len) == (8, 4, "last", 10)
    assert s.chance_loss == pytest.approx(math.log(4))
    V = char_corpus()[1].size
    s = task_spec("charlm", 50, input_size=3)
    assert (s.input_size, s.output_size, s.loss_steps) == (V, V, "all")
    assert s.chance_loss == pytest.approx(math.log(V))
    assert task_spec("charlm", 50, text="hello").input_size == 4


@pytest.mark.parametrize("name,T", CASES)
def test_same_seed_same_batch_different_seed_different(name, T):
    a = make_batch(name, T, 6, seed=123)
    b = make_batch(name, T, 6, seed=123)
    c = make_batch(name, T, 6, seed=124)
    assert torch.equal(a.inputs, b.inputs)
    assert not torch.equal(a.inputs, c.inputs)
    if a.targets is not None:
        assert torch.equal(a.targets, b.targets)


def test_dtype_does_not_change_the_draw():
    a = make_batch("adding", 20, 4, seed=3, dtype=torch.float64)
    b = make_batch("adding", 20, 4, seed=3, dtype=torch.float32)
    assert torch.allclose(a.inputs.float(), b.inputs)


# --------------------------------------------------------------------------- #
# random probe
# --------------------------------------------------------------------------- #
def test_random_probe_loss_is_last_step_first_channel():
    b = make_batch("random", 6, 4, seed=1, input_size=5)
    y = torch.randn(6, 4, 1)
    assert torch.equal(b.loss_per_sequence(y), y[-1, :, 0])
    assert b.spec.chance_loss == 0.0 and b.spec.kind == "probe"


def test_random_readout_unit_norm_and_deterministic():
    u64 = random_readout(64, seed=7, dtype=torch.float64)
    assert u64.shape == (64,) and u64.dtype == torch.float64
    assert abs(torch.linalg.vector_norm(u64).item() - 1.0) < 1e-12
    u32 = random_readout(64, seed=7, dtype=torch.float32)
    assert abs(torch.linalg.vector_norm(u32).item() - 1.0) < 1e-6
    assert torch.equal(u64, random_readout(64, 7, torch.float64))
    assert not torch.equal(u64, random_readout(64, 8, torch.float64))
    # gradient of the probe loss w.r.t. the last hidden state is u itself
    h = torch.randn(3, 2, 64, dtype=torch.float64, requires_grad=True)
    b = make_batch("random", 3, 2, seed=0, input_size=4, dtype=torch.float64)
    b.loss_per_sequence(h @ u64[:, None]).sum().backward()
    assert torch.allclose(h.grad[-1], u64.expand(2, 64))
    assert torch.all(h.grad[:-1] == 0)


# --------------------------------------------------------------------------- #
# adding
# --------------------------------------------------------------------------- #
def test_adding_markers_and_targets():
    T, B = 31, 200
    b = make_batch("adding", T, B, seed=2, dtype=torch.float64)
    values, markers = b.inputs[..., 0], b.inputs[..., 1]
    assert ((values >= 0) & (values <= 1)).all()
    assert set(markers.unique().tolist()) <= {0.0, 1.0}
    assert (markers.sum(0) == 2).all()
    assert (markers[: T // 2].sum(0) == 1).all() and (markers[T // 2 :].sum(0) == 1).all()
    assert torch.allclose(b.targets, (values * markers).sum(0))


def test_adding_min_length_two():
    b = make_batch("adding", 2, 8, seed=0)
    assert (b.inputs[..., 1] == 1).all()


def test_adding_chance_level_empirical():
    b = make_batch("adding", 10, 20000, seed=0, dtype=torch.float64)
    y = torch.ones(10, 20000, 1, dtype=torch.float64)
    assert abs(b.loss(y).item() - 1 / 6) < 0.01
    assert b.spec.chance_loss == pytest.approx(1 / 6)
    # the constant 1 is the best constant predictor: target mean ~ 1
    assert abs(b.targets.mean().item() - 1.0) < 0.01


# --------------------------------------------------------------------------- #
# copy
# --------------------------------------------------------------------------- #
def test_copy_structure():
    L, B = 30, 50
    b = make_batch("copy", L, B, seed=4)
    sym = b.inputs.argmax(-1)  # (L, B)
    assert torch.equal(b.inputs.sum(-1), torch.ones(L, B))  # one-hot
    head = sym[:10]
    assert ((head >= 1) & (head <= 8)).all()
    assert (sym[10 : L - 11] == 0).all()  # delay - 1 blanks
    assert (sym[L - 11] == 9).all()  # delimiter
    assert (sym[L - 10 :] == 0).all()
    assert (b.targets[: L - 10] == 0).all()
    assert torch.equal(b.targets[L - 10 :], head)


def test_copy_minimal_delay_one():
    b = make_batch("copy", 21, 3, seed=0)
    sym = b.inputs.argmax(-1)
    assert (sym[10] == 9).all() and (sym[11:] == 0).all()


def test_copy_chance_level_empirical():
    L, B = 40, 64
    b = make_batch("copy", L, B, seed=5, dtype=torch.float64)
    y = torch.full((L, B, 10), -1e9, dtype=torch.float64)
    y[: L - 10, :, 0] = 1e9  # blank with certainty
    y[L - 10 :, :, 1:9] = 0.0  # uniform over data symbols 1..8
    expected = 10 * math.log(8) / L
    assert abs(b.loss(y).item() - expected) < 1e-3
    assert b.spec.chance_loss == pytest.approx(expected)


# --------------------------------------------------------------------------- #
# temporal order
# --------------------------------------------------------------------------- #
def test_temporal_order_windows_rule():
    w1, w2 = temporal_order_windows(100)
    assert (w1.start, w1[-1], w2.start, w2[-1]) == (10, 20, 50, 60)
    for T in range(10, 300):
        w1, w2 = temporal_order_windows(T)
        assert len(w1) and len(w2)
        assert 1 <= w1.start and w1[-1] < w2.start and w2[-1] <= T - 2


@pytest.mark.parametrize("T", [10, 37, 100])
def test_temporal_order_structure(T):
    B = 300
    b = make_batch("temporal-order", T, B, seed=6)
    sym = b.inputs.argmax(-1)  # (T, B); alphabet a b c d X Y B E
    assert (sym[0] == 6).all() and (sym[-1] == 7).all()
    w1, w2 = temporal_order_windows(T)
    for j in range(B):
        rel = torch.nonzero((sym[:, j] == 4) | (sym[:, j] == 5)).flatten().tolist()
        assert len(rel) == 2
        t1, t2 = rel
        assert t1 in w1 and t2 in w2
        others = torch.ones(T, dtype=torch.bool)
        others[[0, t1, t2, T - 1]] = False
        assert (sym[others, j] <= 3).all()
        expected = 2 * (sym[t1, j].item() == 5) + (sym[t2, j].item() == 5)
        assert b.targets[j].item() == expected


def test_temporal_order_chance_level_empirical():
    B = 20000
    b = make_batch("temporal-order", 20, B, seed=0)
    freqs = torch.bincount(b.targets, minlength=4).double() / B
    assert torch.allclose(freqs, torch.full((4,), 0.25, dtype=torch.float64), atol=0.02)
    y = torch.zeros(20, B, 4, dtype=torch.float64)
    assert b.loss(y).item() == pytest.approx(math.log(4), abs=1e-12)


# --------------------------------------------------------------------------- #
# charlm
# --------------------------------------------------------------------------- #
def test_shipped_corpus():
    corpus, vocab = char_corpus()
    assert 8_000 <= len(corpus.encode()) <= 20_000
    assert not corpus.startswith("#") and "Shall I compare thee" in corpus
    assert vocab.chars == sorted(set(corpus))
    assert vocab.decode(vocab.encode(corpus)) == corpus
    assert all(vocab.itos[vocab.stoi[c]] == c for c in vocab.chars)


def test_hello_corpus_and_vocab():
    corpus, vocab = char_corpus("hello")
    assert corpus == "hello"
    assert vocab.chars == ["e", "h", "l", "o"] and vocab.size == 4
    assert vocab.encode("hello").tolist() == [1, 0, 2, 2, 3]
    assert vocab.decode(torch.tensor([1, 0, 2, 2, 3])) == "hello"
    with pytest.raises(ValueError) as e:
        vocab.encode("help")
    _one_line_naming(e, "'p'")
    with pytest.raises(ValueError) as e:
        vocab.decode([4])
    _one_line_naming(e, "id=4")


def test_charlm_targets_are_next_chars():
    corpus, vocab = char_corpus()
    T, B = 40, 16
    b = make_batch("charlm", T, B, seed=8)
    ids = b.inputs.argmax(-1)  # (T, B)
    for j in range(B):
        window = vocab.decode(ids[:, j]) + vocab.decode(b.targets[-1:, j])
        assert window in corpus
        assert torch.equal(ids[1:, j], b.targets[:-1, j])


def test_charlm_hello_wraps_cyclically():
    b = make_batch("charlm", 23, 10, seed=9, text="hello")
    _, vocab = char_corpus("hello")
    assert b.spec.input_size == 4 and b.inputs.shape == (23, 10, 4)
    for j in range(10):
        s = vocab.decode(b.inputs[:, j].argmax(-1)) + vocab.decode(b.targets[-1:, j])
        assert s in "hello" * 6


def test_charlm_shipped_length_limit():
    n = len(char_corpus()[0])
    make_batch("charlm", n - 1, 2, seed=0)  # the whole corpus is one window
    with pytest.raises(ValueError) as e:
        task_spec("charlm", n)
    _one_line_naming(e, f"seq_len={n}", "charlm", f"<= {n - 1}")


def test_charlm_chance_level_uniform():
    b = make_batch("charlm", 30, 8, seed=0)
    V = b.spec.output_size
    y = torch.zeros(30, 8, V, dtype=torch.float64)
    assert b.loss(y).item() == pytest.approx(math.log(V), abs=1e-12)
    assert perplexity(b.loss(y).item()) == pytest.approx(V)
    assert perplexity(0.0) == 1.0


# --------------------------------------------------------------------------- #
# validation messages
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "kwargs,words",
    [
        (dict(name="lstm", seq_len=10, batch_size=2), ["name='lstm'", "copy"]),
        (dict(name="copy", seq_len=5, batch_size=2), ["seq_len=5", "'copy'", ">= 21"]),
        (dict(name="adding", seq_len=1, batch_size=2), ["seq_len=1", ">= 2"]),
        (dict(name="temporal-order", seq_len=9, batch_size=2), ["seq_len=9", ">= 10"]),
        (dict(name="random", seq_len=0, batch_size=2), ["seq_len=0", ">= 1"]),
        (dict(name="random", seq_len=4, batch_size=0), ["batch_size=0", ">= 1"]),
        (dict(name="random", seq_len=4, batch_size=2, input_size=0), ["input_size=0", ">= 1"]),
        (dict(name="random", seq_len=4.5, batch_size=2), ["seq_len=4.5", "int"]),
        (dict(name="charlm", seq_len=4, batch_size=2, text="war-and-peace"), ["text='war-and-peace'", "hello"]),
        (dict(name="random", seq_len=4, batch_size=2, dtype=torch.int64), ["dtype=", "float"]),
    ],
)
def test_validation_errors_one_line(kwargs, words):
    with pytest.raises(ValueError) as e:
        make_batch(seed=0, **kwargs)
    _one_line_naming(e, *words)


def test_loss_rejects_wrong_y_shape():
    b = make_batch("copy", 21, 3, seed=0)
    with pytest.raises(ValueError) as e:
        b.loss(torch.zeros(21, 3, 4))
    _one_line_naming(e, "y has shape (21, 3, 4)", "(21, 3, 10)")


def test_random_readout_validation():
    with pytest.raises(ValueError) as e:
        random_readout(0, seed=0, dtype=torch.float32)
    _one_line_naming(e, "hidden_size=0")


# --------------------------------------------------------------------------- #
# load_inputs
# --------------------------------------------------------------------------- #
def test_load_inputs_npy_round_trip(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 3, 4))
    p = tmp_path / "x.npy"
    np.save(p, x)
    t = load_inputs(str(p), dtype=torch.float64)
    assert t.dtype == torch.float64 and torch.equal(t, torch.from_numpy(x))
    assert load_inputs(p).dtype == torch.float32
    assert load_inputs(p, input_size=4).shape == (5, 3, 4)


def test_load_inputs_pt_round_trip(tmp_path):
    x = torch.randn(6, 2, 3)
    p = tmp_path / "x.pt"
    torch.save(x, p)
    assert torch.equal(load_inputs(p), x)
    torch.save(torch.arange(24).reshape(2, 3, 4), p)  # integer data is accepted
    assert load_inputs(p).dtype == torch.float32


def _save(tmp_path, name, obj):
    p = tmp_path / name
    if name.endswith(".npy"):
        np.save(p, obj)
    elif name.endswith(".pt"):
        torch.save(obj, p)
    else:
        p.write_text("1,2,3\n")
    return p


@pytest.mark.parametrize(
    "name,obj,words",
    [
        ("two_d.npy", np.zeros((4, 3)), ["wrong ndim 2", "(T, B, input_size)"]),
        ("two_d.pt", torch.zeros(4, 3), ["wrong ndim 2"]),
        ("nan.npy", np.array([[[0.0, np.nan]]]), ["non-finite", "NaN"]),
        ("inf.pt", torch.tensor([[[0.0, float("inf")]]]), ["non-finite"]),
        ("empty.npy", np.zeros((0, 2, 3)), ["wrong shape (0, 2, 3)"]),
        ("strings.npy", np.array([[["a", "b"]]]), ["non-numeric dtype"]),
        ("bools.pt", torch.zeros(2, 2, 2, dtype=torch.bool), ["non-numeric dtype"]),
        ("dict.pt", {"x": torch.zeros(2, 2, 2)}, ["contains dict"]),
        ("data.csv", None, ["unsupported extension '.csv'", ".npy or .pt"]),
    ],
)
def test_load_inputs_errors(tmp_path, name, obj, words):
    p = _save(tmp_path, name, obj)
    with pytest.raises(ValueError) as e:
        load_inputs(p)
    _one_line_naming(e, str(p), *words)


def test_load_inputs_missing_and_corrupt(tmp_path):
    missing = tmp_path / "nope.npy"
    with pytest.raises(ValueError) as e:
        load_inputs(missing)
    _one_line_naming(e, str(missing), "file not found")
    corrupt = tmp_path / "bad.pt"
    corrupt.write_bytes(b"not a torch file\nat all\n")
    with pytest.raises(ValueError) as e:
        load_inputs(corrupt)
    _one_line_naming(e, str(corrupt), "could not be read as .pt")


def test_load_inputs_input_size_mismatch_and_overflow(tmp_path):
    p = _save(tmp_path, "x.npy", np.zeros((2, 2, 3)))
    with pytest.raises(ValueError) as e:
        load_inputs(p, input_size=4)
    _one_line_naming(e, "input_size=4")
    p = _save(tmp_path, "big.npy", np.full((1, 1, 1), 1e300))
    with pytest.raises(ValueError) as e:
        load_inputs(p, dtype=torch.float32)
    _one_line_naming(e, "overflow")
    assert load_inputs(p, dtype=torch.float64).item() == 1e300


def test_charvocab_size_and_len():
    v = CharVocab("banana")
    assert v.chars == ["a", "b", "n"] and v.size == len(v) == 3
    assert tasks.perplexity(math.log(7)) == pytest.approx(7)


@pytest.mark.parametrize("seed,words", [(2**64, ["seed=", "out of range"]), (True, ["seed=True", "bool"]), (1.0, ["seed=1.0", "int"])])
def test_seed_validation(seed, words):
    with pytest.raises(ValueError) as e:
        make_batch("random", 3, 2, seed=seed)
    _one_line_naming(e, *words)
    assert torch.equal(make_batch("random", 3, 2, seed=np.int64(5)).inputs, make_batch("random", 3, 2, seed=5).inputs)
