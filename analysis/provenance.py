r"""What actually ran: one record per analysis, for the JSON (``provenance``), the exports' config.json and the
deck's notes.

    run_record(result, extra) -> {"T", "B", "dtype", "loss", "loss_steps", "layer", "num_layers", "views",
                                   "jacobian_detail", "jacobian_lags", "jacobian_sequences", "seed", "source",
                                   "task", "readout", "embedding", "files": {role: {"name", "sha256", "bytes"}},
                                   "dropout", "seeds_matter", ...}
    file_record(name, data) -> {"name", "sha256", "bytes"}
    provenance_lines(record) -> short "key: value" lines (the deck's notes, the summary)

``layer`` counts from 0, as the API, the CLI and the JSON do ("layer 0 (bottom) of 2"). ``seeds_matter`` is False
when nothing seeded shapes the numbers: a user's model on given inputs (the seed draws only the random probe's
direction u when no readout or loss is given, and the inputs when none are given).

The exported config.json is ``{"config": <the resolved ExperimentConfig>, "provenance": <this record>}``: the
command line's ``--config`` reads it back (a result file's shape), so re-running it with the same files gives the
same numbers (tests/test_provenance.py).
"""
from __future__ import annotations

import hashlib


def file_record(name: str, data: bytes) -> dict:
    return {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _layer_text(layer: int, L: int) -> str:
    a = layer % L
    where = " (bottom)" if a == 0 and L > 1 else " (top)" if a == L - 1 and L > 1 else ""
    return f"layer {a}{where} of {L}"


def run_record(res, extra: dict | None = None) -> dict:
    """The record of ``res`` (an ExperimentResult) with ``extra`` (the source, files, names, loss text) merged."""
    c = res.config
    extra = dict(extra or {})
    own = extra.get("source") in ("python", "files", "upload")
    loss_steps = res.spec.loss_steps if c.loss_steps == "auto" else c.loss_steps
    rec = {
        "source": "task", "task": None if own else c.task,
        "T": c.seq_len, "B": c.batch_size, "dtype": c.dtype,
        "loss": extra.pop("loss", None) or f"task {res.spec.name}'s loss",
        "loss_steps": loss_steps,
        "layer": c.analysed_layer, "num_layers": c.num_layers, "layer_text": _layer_text(c.layer, c.num_layers),
        "views": list(res.views),
        "jacobian_detail": c.jacobian_detail,
        "jacobian_lags": None if res.jac is None else c.jacobian_lags,
        "jacobian_sequences": None if res.jac is None else res.jac.batch_analysed,
        "seed": c.seed,
        "readout": c.readout, "embedding": c.embedding,
        "seeds_matter": True,
    }
    rec.update(extra)
    if own:
        given_inputs = rec.get("source") == "python" or "inputs" in (rec.get("files") or {})
        probe = "random probe" in rec["loss"]
        rec["seeds_matter"] = bool(probe or not given_inputs)
        rec["seed_role"] = ("the seed draws the random probe's direction u" if probe and given_inputs else
                            "the seed draws the inputs" + (" and the probe's direction u" if probe else "")
                            if not given_inputs else "none: the inputs are given and the loss is the model's own")
    return rec


def provenance_lines(rec: dict | None) -> list[str]:
    """Short lines for notes: what ran, the files and their sha256, the dropout that was not applied."""
    if not rec:
        return []
    what = (f"T={rec['T']}, B={rec['B']}, {rec['dtype']}, {rec['layer_text']}, loss: {rec['loss']} "
            f"(loss_steps={rec['loss_steps']}), views: {', '.join(rec['views'])}, Jacobian detail "
            f"{rec['jacobian_detail']}")
    lines = [f"ran: {what}"]
    if rec.get("readout") or rec.get("embedding"):
        lines.append(f"readout: {rec.get('readout')}, embedding: {rec.get('embedding')}")
    for role, f in (rec.get("files") or {}).items():
        lines.append(f"{role}: {f['name']} sha256 {f['sha256']} ({f['bytes']:,} bytes)")
    if rec.get("dropout") is not None:
        lines.append("dropout not applied: " + (", ".join(rec["dropout"]) if isinstance(rec["dropout"], list)
                                                else str(rec["dropout"])) if rec["dropout"] else "dropout: none found")
    if "seed_role" in rec:
        lines.append(f"seed {rec['seed']}: {rec['seed_role']}")
    return lines
