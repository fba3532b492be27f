"""View 5, training: loss, gradient norm and clipping over steps, perplexity and samples of the char-LM."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from .spectrum import _variant
from .theme import (
    CELL_COLORS,
    SAMPLES_SHOWN,
    VARIANT_DASHES,
    _base_layout,
    _hline,
    _vline,
    cell_of,
    config_meta,
    label_of,
    new_figure,
    positive,
)


def _nonfinite_steps(h: dict) -> list[tuple[int, str]]:
    """(step, where) of the non-finite steps of one history."""
    out = []
    nf = h.get("nonfinite")
    steps = np.asarray(h.get("step", []))
    if nf is not None:
        for s, d in zip(steps, nf):
            if d:
                out.append((int(s), describe_nonfinite(d)))
        return out
    loss = np.asarray(h.get("loss", []), float)
    gb = np.asarray(h.get("grad_norm_before", []), float)
    for i, s in enumerate(steps):
        if (i < len(loss) and not np.isfinite(loss[i])) or (i < len(gb) and not np.isfinite(gb[i])):
            out.append((int(s), "loss or gradient"))
    return out


def describe_nonfinite(d: dict | None) -> str:
    """A non-finite record {"quantity", "timestep", "layer", ...} in plain words."""
    if not d:
        return ""
    q = {"hidden_state": "hidden state h_t", "grad_norm": "gradient ‖∂L/∂h_t‖", "loss": "loss",
         "parameter_gradient": "parameter gradient", "jacobian_product": "Jacobian product"}.get(
        d.get("quantity"), str(d.get("quantity", "value")))
    parts = [q]
    if d.get("timestep") is not None:
        parts.append(f"at t={d['timestep']}")
    if d.get("lag") is not None:
        parts.append(f"lag k={d['lag']}")
    if d.get("layer") is not None:
        parts.append(f"layer {d['layer']}")
    if d.get("sequence") is not None:
        parts.append(f"sequence {d['sequence']}")
    return " ".join(parts)


def _change_labels(hist_items) -> dict[int, str]:
    """{step: "clip=norm, clip_threshold=1"} where settings changed (first history that records it)."""
    out = {}
    for _, h in hist_items:
        steps = np.asarray(h.get("step", []))
        settings = h.get("settings")
        for i, (s, ch) in enumerate(zip(steps, h.get("changed", []))):
            if ch and int(s) not in out:
                if settings is not None and i < len(settings):
                    out[int(s)] = ", ".join(f"{k}={settings[i].get(k)}" for k in ch)
                else:
                    out[int(s)] = ", ".join(ch) + " changed"
    return out


def training_figures(results: dict, histories: dict | None = None) -> dict[str, go.Figure]:
    hist_items = [(k, h) for k, h in (histories or {}).items() if h is not None and len(h.get("step", [])) > 0]
    if not hist_items:
        return {}
    meta = config_meta(results)
    view = "training"
    changes = _change_labels(hist_items)
    bad = [(k, s, w) for k, h in hist_items for s, w in _nonfinite_steps(h)]

    all_steps = np.concatenate([np.asarray(h["step"], float) for _, h in hist_items])
    x_range = [float(all_steps.min()) - 0.5, float(all_steps.max()) + 0.5]

    def marks(fig):
        for slot, (s, text) in enumerate(sorted(changes.items())):
            _vline(fig, s, f"step {s}: {text}", "#7B3294", slot % 4)
        for i, (k, s, w) in enumerate(bad):
            fig.add_shape(type="line", x0=s, x1=s, y0=0, y1=1, yref="paper", line=dict(color="#C00", width=2))
            right = s > (x_range[0] + x_range[1]) / 2  # label on the side with room
            fig.add_annotation(x=s, y=0.02 + 0.08 * i, yref="paper", yanchor="bottom",
                               text=f"NaN/Inf: {label_of(k)} step {s}, {w}", showarrow=False,
                               xanchor="right" if right else "left", xshift=-3 if right else 3,
                               font=dict(color="#C00", size=12), bgcolor="rgba(255,255,255,0.8)")
        fig.update_xaxes(range=x_range)  # labels must not stretch the axis

    fig = new_figure()
    chances = {}
    for k, h in hist_items:
        color = CELL_COLORS[cell_of(k)]
        fig.add_trace(go.Scatter(x=np.asarray(h["step"]), y=np.asarray(h["loss"], float), name=f"{label_of(k)} loss",
                                 line=dict(color=color, width=2, dash=VARIANT_DASHES[_variant(k, hist_items)]),
                                 meta={"role": "loss", "cell": k}))
        ch = h.get("chance_loss")
        if ch is None and cell_of(k) in results:
            ch = results[cell_of(k)].spec.chance_loss
        elif ch is None and results:
            ch = next(iter(results.values())).spec.chance_loss
        if ch is not None:
            chances[round(float(ch), 12)] = float(ch)
    for ch in chances.values():
        _hline(fig, ch, f"chance level {ch:.4g}", color="#555", position="right")
    marks(fig)
    losses = np.concatenate([np.asarray(h["loss"], float) for _, h in hist_items])
    losses = losses[np.isfinite(losses) & (losses > 0)]
    if losses.size and losses.max() > 100 * losses.min():  # spans decades (an exploding start): log axis
        fig.update_yaxes(type="log", title="training loss  (log)", exponentformat="power")
    else:
        fig.update_yaxes(title="training loss", rangemode="tozero")
    fig.update_xaxes(title="training step")
    _base_layout(fig, "Loss during training (dashed: the task's chance level, a memoryless predictor)", meta, view,
                 "training_loss", legend_bottom=True,
                 caption="The training loss of each cell against the chance level (dashed), the loss of the best "
                         "predictor that remembers nothing: a cell that stays on it has not learned to carry the "
                         "information across the sequence. Setting changes are marked at the step they took effect.")
    figs = {"training_loss": fig}

    fig = new_figure()
    for k, h in hist_items:
        color = CELL_COLORS[cell_of(k)]
        steps = np.asarray(h["step"])
        before = positive(h["grad_norm_before"])
        after = positive(h["grad_norm_after"])
        clipped = np.asarray(h["clipped"], bool)
        fig.add_trace(go.Scatter(x=steps, y=before, name=f"{label_of(k)} ‖g‖ before clipping",
                                 line=dict(color=color, width=2, dash=VARIANT_DASHES[_variant(k, hist_items)]),
                                 meta={"role": "grad_norm_before", "cell": k}))
        fig.add_trace(go.Scatter(x=steps, y=after, name=f"{label_of(k)} ‖g‖ after clipping (applied)",
                                 line=dict(color=color, width=1.5, dash="dot"), opacity=0.8,
                                 meta={"role": "grad_norm_after", "cell": k}))
        if clipped.any():
            fig.add_trace(go.Scatter(x=steps[clipped], y=before[clipped], mode="markers",
                                     name=f"{label_of(k)} clipped steps", marker=dict(symbol="x", size=7, color=color),
                                     meta={"role": "clipped", "cell": k}))
    marks(fig)
    fig.update_yaxes(type="log", title="global gradient norm ‖g‖  (log)", exponentformat="power")
    fig.update_xaxes(title="training step")
    _base_layout(fig, "Global gradient norm before and after clipping (× = the step was clipped)", meta, view,
                 "training_grad_norm", legend_bottom=True,
                 caption="‖g‖ of all parameters' gradients before clipping and the norm actually applied after it: "
                         "spikes are exploding gradients, and clipping by norm rescales such a step to the "
                         "threshold without changing its direction.")
    figs["training_grad_norm"] = fig

    lm = [(k, h) for k, h in hist_items if _task_of(k, h, results) == "charlm"]
    if lm:
        figs["training_perplexity"] = _perplexity_figure(lm, meta, marks)
        samples = _samples_figure(lm, meta)
        if samples is not None:
            figs["charlm_samples"] = samples
    return figs


def _task_of(key, h: dict, results: dict) -> str | None:
    """The task a history trained on: its own "task" entry, else the analysed config's."""
    if h.get("task"):
        return h["task"]
    r = results.get(key) or results.get(cell_of(key)) or (next(iter(results.values())) if results else None)
    return r.config.task if r is not None else None


def _perplexity_of(h: dict) -> np.ndarray:
    """Perplexity per step: the history's own (StepRecord.perplexity), else exp(cross-entropy)."""
    if h.get("perplexity") is not None:
        return np.array([np.nan if v is None else v for v in h["perplexity"]], dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.exp(np.asarray(h["loss"], float))


def _perplexity_figure(items, meta: dict, marks) -> go.Figure:
    """Perplexity exp(J) of the character-level LM against the uniform guess (perplexity = vocabulary size V)."""
    fig = new_figure()
    baselines = {}
    for k, h in items:
        color = CELL_COLORS[cell_of(k)]
        ppl = _perplexity_of(h)
        fig.add_trace(go.Scatter(x=np.asarray(h["step"]), y=ppl, name=f"{label_of(k)} perplexity",
                                 line=dict(color=color, width=2, dash=VARIANT_DASHES[_variant(k, items)]),
                                 meta={"role": "perplexity", "cell": k},
                                 hovertemplate="step %{x}<br>perplexity %{y:.3f}<extra>" + label_of(k) + "</extra>"))
        V = h.get("vocab_size")
        if V is None and h.get("chance_loss") is not None:
            V = math.exp(float(h["chance_loss"]))  # the chance level of the LM is ln V
        if V is not None:
            baselines[int(round(V))] = h.get("vocab")
    for V, vocab in baselines.items():
        which = f": {', '.join(vocab)}" if vocab and len(vocab) <= 8 else ""
        _hline(fig, V, f"uniform guess: perplexity = V = {V} (vocabulary size{which})", log=True, color="#555",
               position="right")
    _hline(fig, 1.0, "1: every next character certain", log=True, color="#AAA", position="right")
    marks(fig)
    vals = np.concatenate([_perplexity_of(h) for _, h in items] + [np.array(list(baselines) + [1.0], float)])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    rng = [math.log10(max(vals.min(), 1e-3)) - 0.08, math.log10(vals.max()) + 0.12] if vals.size else None
    ticks = {}
    if rng is not None:  # 1-2-5 ticks and V, written out (plotly's minor log labels read "6" for 60)
        for e in range(math.floor(rng[0]), math.ceil(rng[1]) + 1):
            for m in (1, 2, 5):
                v = m * 10.0 ** e
                near_v = any(abs(math.log10(v / V)) < 0.1 for V in baselines if V > 0)
                if 10 ** rng[0] <= v <= 10 ** rng[1] and not near_v:
                    ticks[v] = f"{v:g}"
        for V in baselines:
            ticks[float(V)] = f"{V}"
    fig.update_yaxes(type="log", title="perplexity exp(J)  (log)", range=rng,
                     **({"tickvals": sorted(ticks), "ticktext": [ticks[v] for v in sorted(ticks)]} if ticks else {}))
    fig.update_xaxes(title="training step")
    _base_layout(fig, "Character-level LM: perplexity = exp(cross-entropy J) during training (dashed: a uniform "
                 "guess)", meta, "training", "training_perplexity", legend_bottom=True,
                 caption="Perplexity exp(J): the number of characters the model hesitates between on average. A "
                         "uniform guess has perplexity V (the vocabulary size, dashed); lower means it predicts "
                         "the next character.")
    return fig


def _samples_figure(items, meta: dict) -> go.Figure | None:
    """A table of the text sampled from each model (newest first): step, run, temperature, the characters.

    The samples also travel in the trace's meta, so the JSON export holds them verbatim.
    """
    rows = []
    for k, h in items:
        for smp in h.get("samples") or []:
            rows.append((int(smp["step"]), label_of(k), float(smp["temperature"]), str(smp["text"])))
    if not rows:
        return None
    rows.sort(key=lambda r: (-r[0], r[1]))
    rows = rows[:SAMPLES_SHOWN]
    shown = [r[3].replace("\n", "↵") for r in rows]
    fig = new_figure(go.Table(
        columnwidth=[60, 150, 50, 740],
        header=dict(values=["step", "model", "T", "sampled characters (↵ = new line)"], align="left",
                    fill_color="#E5EAF2", font=dict(size=13)),
        cells=dict(values=[[r[0] for r in rows], [r[1] for r in rows], [f"{r[2]:g}" for r in rows], shown],
                   align="left", font=dict(family="DejaVu Sans Mono, Menlo, Consolas, monospace", size=13),
                   height=26),
        name="samples",
        meta={"role": "samples", "samples": [{"step": r[0], "model": r[1], "temperature": r[2], "text": r[3]}
                                             for r in rows]}))
    _base_layout(fig, "Samples from the language model: x<sub>t+1</sub> ~ softmax(y<sub>t</sub> / T), newest first",
                 meta, "training", "charlm_samples", height=90 + 27 * (len(rows) + 1),
                 caption="Text sampled one character at a time from the model, each fed back as the next input, "
                         "at temperature T (lower: more likely characters only).")
    fig.update_layout(margin=dict(t=55, b=10))
    return fig


