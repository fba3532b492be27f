r"""The total dL/dh_t of every layer of a torch nn.RNN/LSTM/GRU from the gradient its output received in training.

A hook on the module's output y_t = h^{top}_t gives only the direct part e_t = dL/dy_t. The total derivative adds
every later path through the recurrence; with the per-step Jacobians J_t = d state_t / d state_{t-1} it is

    G_{T-1} = e_{T-1},        G_{t-1} = e_{t-1} + G_t J_t        (a vector-Jacobian product per step)

run from the last step down (the engine's chain of ``analysis.gradients._VJPSteps``, here with a direct term at
every step). The layers are processed top-down: the direct part of layer l < L-1 is what layer l+1's input
projection passes back, e^l_t = ga^{l+1}_t W_ih^{l+1}, with ga^{l+1}_t the gate pre-activation gradients of step t.

Closed forms of one step (torch's gate order and parametrization, a = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh):

    rnn    ga = G_t phi'(a_t);                          carry_h = ga W_hh
    lstm   gc = carry_c + G_t o (1 - tanh^2 c_t);      ga = [gc g i(1-i), gc c_{t-1} f(1-f), gc i (1-g^2),
           G_t tanh(c_t) o(1-o)];                       carry_h = ga W_hh,  carry_c = gc f
    gru    ga_n = G_t (1-z)(1-n^2),  ga_z = G_t (h_{t-1} - n) z(1-z),  ga_r = ga_n (W_hn h_{t-1} + b_hn) r(1-r);
           carry_h = G_t z + [ga_r, ga_z, ga_n r] W_hh;  the input sees [ga_r, ga_z, ga_n]

The states come from the module's own fused forward (``torch.func.functional_call`` of a one-layer twin per
layer), so the chain costs about one backward pass of the recurrent part. Unidirectional modules only: a
bidirectional one goes through ``engine_total`` (the engine's network and autograd; exact, slower).
For the LSTM the reported norm is ||dL/dh_t|| with c_t a separate variable, as ``analyze()`` reports it.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def layer_params(rnn: nn.RNNBase, l: int, sfx: str = "") -> dict[str, Tensor]:
    """Layer l's four tensors (detached), keyed as a one-layer module's: weight_ih_l0, ..."""
    return {f"{p}_l0{sfx}": getattr(rnn, f"{p}_l{l}{sfx}").detach() for p in PARAMS}


def _twin(rnn: nn.RNNBase, in_size: int) -> nn.RNNBase:
    kw = dict(input_size=in_size, hidden_size=rnn.hidden_size, num_layers=1, bias=True, batch_first=False,
              bidirectional=rnn.bidirectional, dtype=rnn.weight_hh_l0.dtype, device=rnn.weight_hh_l0.device)
    if rnn.mode.startswith("RNN"):
        return nn.RNN(nonlinearity="relu" if rnn.mode == "RNN_RELU" else "tanh", **kw)
    return (nn.LSTM if rnn.mode == "LSTM" else nn.GRU)(**kw)


@torch.no_grad()
def layer_outputs(rnn: nn.RNNBase, x: Tensor, hx, twins: dict, layers: int | None = None) -> list[Tensor]:
    """The first ``layers`` (default all) layers' h_t (T, B, H), time-major, from fused one-layer forwards (no
    dropout: the deterministic network). ``hx`` is torch's h0 (L, B, H) or (h0, c0), or None; ``twins`` caches
    the one-layer modules."""
    outs, inp = [], x
    for l in range(rnn.num_layers if layers is None else layers):
        key = (l, inp.shape[-1])
        if key not in twins:
            twins[key] = _twin(rnn, inp.shape[-1])
        h0 = None if hx is None else (tuple(h[l:l + 1] for h in hx) if isinstance(hx, tuple) else hx[l:l + 1])
        y, _ = functional_call(twins[key], layer_params(rnn, l), (inp, h0))
        outs.append(y)
        inp = y
    return outs


def _step_tensors(mode: str, P: dict, x: Tensor, h: Tensor, h0: Tensor, c0: Tensor | None) -> dict:
    """Everything the backward chain of one layer needs, computed for all t at once (batched GEMMs)."""
    Wih, Whh, bih, bhh = (P[f"{p}_l0"] for p in PARAMS)
    hprev = torch.cat([h0.unsqueeze(0), h[:-1]], 0)  # (T, B, H) h_{t-1}
    ai = x @ Wih.T + bih  # (T, B, G)
    ah = hprev @ Whh.T + bhh  # (T, B, G)
    H = h.shape[-1]
    if mode == "RNN_TANH":
        return {"d": 1 - h * h}
    if mode == "RNN_RELU":
        return {"d": ((ai + ah) > 0).to(h.dtype)}
    if mode == "LSTM":
        a = ai + ah
        i, f, o = torch.sigmoid(a[..., :H]), torch.sigmoid(a[..., H:2 * H]), torch.sigmoid(a[..., 3 * H:])
        g = torch.tanh(a[..., 2 * H:3 * H])
        ig = i * g
        c = torch.empty_like(h)
        prev = c0
        for t in range(h.shape[0]):  # c_t = f_t c_{t-1} + i_t g_t
            prev = torch.addcmul(ig[t], f[t], prev, out=c[t])
        cprev = torch.cat([c0.unsqueeze(0), c[:-1]], 0)
        tc = torch.tanh(c)
        c3 = torch.cat([g * i * (1 - i), cprev * f * (1 - f), i * (1 - g * g)], -1)  # dc_t / d a_{i,f,g}
        return {"hc": o * (1 - tc * tc), "co": tc * o * (1 - o), "c3": c3, "f": f}
    r = torch.sigmoid(ai[..., :H] + ah[..., :H])
    z = torch.sigmoid(ai[..., H:2 * H] + ah[..., H:2 * H])
    hn = ah[..., 2 * H:]
    n = torch.tanh(ai[..., 2 * H:] + r * hn)
    return {"z": z, "an": (1 - z) * (1 - n * n), "az": (hprev - n) * z * (1 - z), "ar": hn * r * (1 - r), "r": r}


@torch.no_grad()
def layer_chain(mode: str, P: dict, x: Tensor, h: Tensor, e: Tensor, h0: Tensor, c0: Tensor | None, *,
                below: bool = True):
    """(G (T, B, H) the total dL/dh_t, e_below (T, B, I) the direct gradient of the layer's input) for one
    unidirectional layer with inputs x (T, B, I), outputs h (T, B, H) and direct gradients e (T, B, H).
    ``below=False`` (the bottom layer: nothing reads its input's gradient) skips e_below (None): a
    (T B, G) x (G, I) GEMM saved."""
    s = _step_tensors(mode, P, x, h, h0, c0)
    Whh, Wih = P["weight_hh_l0"], P["weight_ih_l0"]
    T = h.shape[0]
    G = torch.empty_like(h)
    ga_in = torch.empty(T, h.shape[1], Whh.shape[0], dtype=h.dtype, device=h.device)  # what the input sees
    carry_h = torch.zeros_like(h[0])
    carry_c = torch.zeros_like(h[0])
    Gs, es, ga = G.unbind(0), e.unbind(0), ga_in.unbind(0)  # per-step views, made once
    st = {k: v.unbind(0) for k, v in s.items()}
    H = h.shape[-1]
    if mode == "LSTM":
        ga3, gao = ga_in[..., :3 * H].unbind(0), ga_in[..., 3 * H:].unbind(0)
        hc, co, c3, f = st["hc"], st["co"], st["c3"], st["f"]
    for t in range(T - 1, -1, -1):
        gh = torch.add(es[t], carry_h, out=Gs[t])
        if mode.startswith("RNN"):
            carry_h = torch.mul(gh, st["d"][t], out=ga[t]) @ Whh
        elif mode == "LSTM":
            gc = torch.addcmul(carry_c, gh, hc[t])  # gc = carry_c + G_t o (1 - tanh^2 c_t)
            torch.mul(gc.repeat(1, 3), c3[t], out=ga3[t])
            torch.mul(gh, co[t], out=gao[t])
            carry_h = ga[t] @ Whh
            carry_c = gc * f[t]
        else:
            ga_n = gh * st["an"][t]
            ga_r, ga_z = ga_n * st["ar"][t], gh * st["az"][t]
            torch.cat([ga_r, ga_z, ga_n], -1, out=ga[t])
            carry_h = gh * st["z"][t] + torch.cat([ga_r, ga_z, ga_n * st["r"][t]], -1) @ Whh
    return G, (ga_in @ Wih if below else None)


@torch.no_grad()
def total_grads(rnn: nn.RNNBase, x: Tensor, hx, e_top: Tensor, twins: dict, top_out: Tensor | None = None
                ) -> list[Tensor]:
    """Per layer, the total dL/dh^l_t (T, B, H), time-major, of a unidirectional module run on x (T, B, I)
    from h0 ``hx`` (torch's layout or None), whose output received e_top (T, B, H) in the backward pass.
    ``top_out``: the module's own output, used for the top layer (its forward skipped) unless dropout between
    layers was active: then every layer is recomputed without it, so the states agree with one another."""
    L, H = rnn.num_layers, rnn.hidden_size
    B = x.shape[1]
    dropped = rnn.training and rnn.dropout > 0 and L > 1
    if top_out is not None and not dropped:
        outs = layer_outputs(rnn, x, hx, twins, L - 1) + [top_out]
    else:
        outs = layer_outputs(rnn, x, hx, twins)
    zeros = x.new_zeros(B, H)
    grads: list[Tensor] = [None] * L
    e = e_top
    for l in range(L - 1, -1, -1):
        if hx is None:
            h0, c0 = zeros, (zeros if rnn.mode == "LSTM" else None)
        elif isinstance(hx, tuple):
            h0, c0 = hx[0][l], hx[1][l]
        else:
            h0, c0 = hx[l], None
        inp = x if l == 0 else outs[l - 1]
        grads[l], e = layer_chain(rnn.mode, layer_params(rnn, l), inp, outs[l], e, h0, c0, below=l > 0)
    return grads


def engine_total(rnn: nn.RNNBase, x: Tensor, hx, e_top: Tensor) -> list[Tensor]:
    """The same totals through the engine's network and autograd (any module, bidirectional included):
    L' = sum_t <e_t, y_t> has the same dL/dh_t as the training loss. Returns per layer (T, B, D*H)."""
    from rnn_models.network import RecurrentNetwork

    from .own_model import _module_arch, prepare_h0
    from .config import ExperimentConfig

    dev = x.device  # the engine's network runs on the CPU; the totals go back to the module's device
    x, e_top = x.detach().cpu(), e_top.cpu()
    hx = None if hx is None else (tuple(h.cpu() for h in hx) if isinstance(hx, tuple) else hx.cpu())
    arch, act = _module_arch(rnn)
    cfg = ExperimentConfig.from_dict({**arch, "activation": act}).model_config(arch["input_size"])
    net = RecurrentNetwork(cfg, dtype=x.dtype)
    net.load_torch_state_dict({k: v.detach() for k, v in rnn.state_dict().items()})
    initial = None if hx is None else prepare_h0(hx, arch, x.shape[1], x.dtype)
    with torch.enable_grad():
        trace = net(x.detach(), initial, views=True)
        wrt = [[s[0] for s in run.states[1:]] for layer in trace.runs for run in layer]
        flat = [h for hs in wrt for h in hs]
        grads = torch.autograd.grad((trace.outputs * e_top).sum(), flat, allow_unused=True)
    T = x.shape[0]
    out, k = [], 0
    for layer in trace.runs:
        parts = []
        for run in layer:
            g = torch.stack([torch.zeros_like(h) if gg is None else gg for gg, h in zip(grads[k:k + T], flat[k:k + T])])
            parts.append(g.flip(0) if run.reverse else g)
            k += T
        out.append(torch.cat(parts, -1).to(dev))
    return out
