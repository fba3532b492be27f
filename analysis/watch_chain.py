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

States: the top layer's h_t is the module's own output when no inter-layer dropout was active; a layer that must
be recomputed (any layer below the top; every layer under active dropout, so the states agree with one another)
runs, for the LSTM, its own forward loop that keeps its gates (``_lstm_forward``: one batched x W_ih^T and one
h_{t-1} W_hh^T per step, the fused forward's GEMMs, where the fused forward plus re-deriving the gates from its
h_t took two batched GEMMs more), and for the RNN and GRU torch's fused forward (``torch.func.functional_call``
of a one-layer twin) with the step tensors from its h_t (none of the RNN's needs a GEMM; the GRU's two batched).
Each backward step is one GEMM that also adds the direct part, G_t = e_t + ga_{t+1} W_hh, and a few elementwise
products on views made once, so the chain costs about one backward pass of the recurrent part and no weight
gradient. The products go through ``linear``: oneDNN's matmul in float32 on the CPU, torch.addmm otherwise.
Unidirectional modules only: a bidirectional one goes through ``engine_total`` (the engine's network and
autograd; exact, slower).
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
    """A one-layer module of rnn's kind (weights left unset: ``functional_call`` passes them). Made on the meta
    device, so its init draws nothing from the global RNG (the training's, shared with a background worker)."""
    kw = dict(input_size=in_size, hidden_size=rnn.hidden_size, num_layers=1, bias=True, batch_first=False,
              bidirectional=rnn.bidirectional, dtype=rnn.weight_hh_l0.dtype, device="meta")
    if rnn.mode.startswith("RNN"):
        twin = nn.RNN(nonlinearity="relu" if rnn.mode == "RNN_RELU" else "tanh", **kw)
    else:
        twin = (nn.LSTM if rnn.mode == "LSTM" else nn.GRU)(**kw)
    return twin.to_empty(device=rnn.weight_hh_l0.device)


ONEDNN = True  # False: every product through torch.addmm (the tests compare the two routes)
_onednn_works: bool | None = None  # probed once


def _use_onednn(x: Tensor) -> bool:
    """Whether ``linear`` may use oneDNN for x: float32 on the CPU, and this torch's op probed once against addmm."""
    global _onednn_works
    if not (ONEDNN and x.dtype == torch.float32 and x.device.type == "cpu" and x.numel() > 0):
        return False
    if _onednn_works is None:
        try:
            g = torch.Generator().manual_seed(0)
            a, W, c = (torch.randn(*s, generator=g) for s in ((5, 7), (3, 7), (5, 3)))
            got = torch.ops.mkldnn._linear_pointwise.binary(a, c, W, None, "add")
            _onednn_works = bool(torch.allclose(got, torch.addmm(c, a, W.T), rtol=1e-5, atol=1e-5))
        except (AttributeError, RuntimeError, NotImplementedError):
            _onednn_works = False
    return _onednn_works


def linear(x: Tensor, W: Tensor, b: Tensor | None = None, add: Tensor | None = None) -> Tensor:
    """x W^T (+ b) (+ add), a new tensor: x (M, K), W (N, K), b (N,), add (M, N) -> (M, N).

    float32 on the CPU goes through oneDNN's matmul (``torch.ops.mkldnn._linear_pointwise``, the op Inductor's CPU
    code calls; exact float32, another summation order than MKL's sgemm): on the lab's 2 shared AMD cores it ran
    the chain's products 1.45x (per step, (20, 800) x (800, 200)) to 2x (batched, (700, 200) x (200, 800)) faster
    than torch.addmm, and the chain is mostly these products. Other dtypes (float64) and devices, or a torch without
    the op (probed once), use torch.addmm."""
    if _use_onednn(x):
        try:
            if add is None:
                return torch.ops.mkldnn._linear_pointwise(x, W, b, "none", [], "")
            return torch.ops.mkldnn._linear_pointwise.binary(x, add, W, b, "add")
        except RuntimeError:  # a case this build's oneDNN refuses: the same product through addmm
            pass
    if add is None:
        return x @ W.T if b is None else torch.addmm(b, x, W.T)
    return torch.addmm(add if b is None else add + b, x, W.T)


def _affine(x: Tensor, W: Tensor, b: Tensor) -> Tensor:
    """x_t W^T + b for every t in one GEMM: x (T, B, I), W (G, I), b (G,) -> (T, B, G)."""
    T, B = x.shape[:2]
    return linear(x.reshape(T * B, -1), W, b).view(T, B, -1)  # (T B, I) @ (I, G) -> (T, B, G)


@torch.no_grad()
def fused_output(rnn: nn.RNNBase, l: int, x: Tensor, h0: Tensor, twins: dict) -> Tensor:
    """Layer l's h_t (T, B, H) from x (T, B, I) and h0 (B, H) by torch's own fused forward of a one-layer twin
    (cached in ``twins``), no dropout: the deterministic network."""
    key = (l, x.shape[-1])
    if key not in twins:
        twins[key] = _twin(rnn, x.shape[-1])
    y, _ = functional_call(twins[key], layer_params(rnn, l), (x, h0.unsqueeze(0)))
    return y


def _lstm_gates(a: Tensor) -> Tensor:
    """[i, f, g, o] = [sigma, sigma, tanh, sigma](a) for pre-activations a (..., 4H), torch's gate order."""
    H = a.shape[-1] // 4
    act = torch.sigmoid(a)
    torch.tanh(a[..., 2 * H:3 * H], out=act[..., 2 * H:3 * H])  # g = tanh(a_g) over the sigmoid's slot
    return act


def _lstm_tensors(act: Tensor, cc: Tensor, tc: Tensor) -> dict:
    """What the LSTM chain needs, for all t at once, from the gates act (T, B, 4H) = [i, f, g, o], the cells
    cc (T+1, B, H) = [c_0, c_1, ..., c_T] and tc (T, B, H) = tanh(c_t). Written into place (no cat)."""
    T, B, H = tc.shape
    i, f, g, o = act.split(H, -1)  # (T, B, H) views each
    om = 1 - act  # (T, B, 4H) [1-i, 1-f, 1-g, 1-o]
    c3 = act.new_empty(T, B, 3, H)  # dc_t / d a_{i,f,g}, laid out as the chain's ga_in[..., :3H]
    ci, cf, cg = c3.unbind(2)  # (T, B, H) views
    torch.mul(g, i, out=ci).mul_(om[..., :H])  # g i (1 - i)
    torch.mul(cc[:-1], f, out=cf).mul_(om[..., H:2 * H])  # c_{t-1} f (1 - f)
    torch.mul(g, g, out=cg).neg_().add_(1).mul_(i)  # i (1 - g^2)
    hc = torch.mul(tc, tc).neg_().add_(1).mul_(o)  # o (1 - tanh^2 c_t)
    co = torch.mul(tc, o).mul_(om[..., 3 * H:])  # tanh(c_t) o (1 - o)
    return {"hc": hc, "co": co, "c3": c3, "f": f}


def _lstm_forward(P: dict, x: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, dict]:
    """An LSTM layer's own forward, keeping its gates: (h (T, B, H), the chain's step tensors). Costs the fused
    forward's GEMMs (one batched x W_ih^T, one h_{t-1} W_hh^T per step) and no more: recomputing the gates from
    the fused forward's h_t would take two batched GEMMs again."""
    Wih, Whh, bih, bhh = (P[f"{p}_l0"] for p in PARAMS)
    T, B, H = x.shape[0], x.shape[1], Whh.shape[1]
    a = _affine(x, Wih, bih + bhh)  # (T, B, 4H) a_t = W_ih x_t + b_ih + b_hh; W_hh h_{t-1} added per step
    act = torch.empty_like(a)  # (T, B, 4H) [i, f, g, o]
    h, tc = x.new_empty(T, B, H), x.new_empty(T, B, H)
    cc = x.new_empty(T + 1, B, H)  # [c_0, c_1, ..., c_T]
    cc[0] = c0
    a_, act_, h_, c_, tc_ = (v.unbind(0) for v in (a, act, h, cc[1:], tc))  # per-step views, made once
    i_, f_, g_, o_ = (v.unbind(0) for v in act.split(H, -1))  # (B, H) per step
    hp, cp = h0, cc[0]
    for t in range(T):
        at = linear(hp, Whh, add=a_[t])  # (B, 4H) a_t + W_hh h_{t-1}
        torch.sigmoid(at, out=act_[t])  # i, f, o (g's slot overwritten next)
        torch.tanh(at[:, 2 * H:3 * H], out=g_[t])  # g = tanh(a_g)
        torch.mul(i_[t], g_[t], out=c_[t])  # c_t = i g
        cp = c_[t].addcmul_(f_[t], cp)  #       + f c_{t-1}
        torch.tanh(cp, out=tc_[t])
        hp = torch.mul(o_[t], tc_[t], out=h_[t])  # h_t = o tanh(c_t)
    return h, _lstm_tensors(act, cc, tc)


def _step_tensors(mode: str, P: dict, x: Tensor, h: Tensor, h0: Tensor, c0: Tensor | None) -> dict:
    """Everything the backward chain of one layer with known outputs h needs, for all t at once (batched GEMMs)."""
    Wih, Whh, bih, bhh = (P[f"{p}_l0"] for p in PARAMS)
    T, B, H = h.shape
    if mode == "RNN_TANH":
        return {"d": 1 - h * h}  # phi'(a_t) = 1 - h_t^2
    if mode == "RNN_RELU":
        return {"d": (h > 0).to(h.dtype)}  # phi'(a_t) = [a_t > 0] = [h_t > 0]
    hprev = torch.cat([h0.unsqueeze(0), h[:-1]], 0)  # (T, B, H) h_{t-1}
    if mode == "LSTM":
        a = _affine(x, Wih, bih + bhh)  # (T, B, 4H)
        # a + h_{t-1} W_hh^T: (T B, H) @ (H, 4H) -> (T, B, 4H)
        a = linear(hprev.reshape(T * B, H), Whh, add=a.view(T * B, -1)).view(T, B, -1)
        act = _lstm_gates(a)
        ig = act[..., :H] * act[..., 2 * H:3 * H]  # i g
        f = act[..., H:2 * H]
        cc = h.new_empty(T + 1, B, H)  # [c_0, c_1, ..., c_T]
        cc[0] = c0
        for t in range(T):  # c_t = f_t c_{t-1} + i_t g_t
            torch.addcmul(ig[t], f[t], cc[t], out=cc[t + 1])
        return _lstm_tensors(act, cc, torch.tanh(cc[1:]))
    ai = _affine(x, Wih, bih)  # (T, B, 3H)
    ah = _affine(hprev, Whh, bhh)  # (T, B, 3H)
    r = torch.sigmoid(ai[..., :H] + ah[..., :H])
    z = torch.sigmoid(ai[..., H:2 * H] + ah[..., H:2 * H])
    hn = ah[..., 2 * H:]
    n = torch.tanh(ai[..., 2 * H:] + r * hn)
    return {"z": z, "an": (1 - z) * (1 - n * n), "az": (hprev - n) * z * (1 - z), "ar": hn * r * (1 - r), "r": r}


@torch.no_grad()
def layer_chain(mode: str, P: dict, x: Tensor, h: Tensor | None, e: Tensor, h0: Tensor, c0: Tensor | None, *,
                below: bool = True, s: dict | None = None):
    """(G (T, B, H) the total dL/dh_t, e_below (T, B, I) the direct gradient of the layer's input) for one
    unidirectional layer with inputs x (T, B, I), outputs h (T, B, H) and direct gradients e (T, B, H); ``s``:
    the step tensors if already made (``_lstm_forward``), else made from h. ``below=False`` (the bottom layer:
    nothing reads its input's gradient) skips e_below (None): a (T B, G) x (G, I) GEMM saved.
    Each step's carry ga_{t+1} W_hh is added to e_t inside the GEMM: G_t = e_t + ga_{t+1} W_hh in one ``linear``."""
    if s is None:
        s = _step_tensors(mode, P, x, h, h0, c0)
    WhhT = P["weight_hh_l0"].T.contiguous()  # (H, G): linear(v, W_hh^T) = v W_hh
    T, B, H = e.shape
    Gs: list[Tensor] = [None] * T  # G_t (B, H), stacked at the end
    ga_in = e.new_empty(T, B, WhhT.shape[1])  # (T, B, G) the gate pre-activation gradients: what the input sees
    es, ga = e.unbind(0), ga_in.unbind(0)  # per-step views, made once
    st = {k: v.unbind(0) for k, v in s.items()}
    if mode == "LSTM":
        ga3 = ga_in.view(T, B, 4, H)[:, :, :3].unbind(0)  # (B, 3, H) per step: [ga_i, ga_f, ga_g]
        gao = ga_in[..., 3 * H:].unbind(0)  # (B, H) per step: ga_o
        c3 = s["c3"].view(T, B, 3, H).unbind(0)  # (B, 3, H) per step
        hc, co, f = st["hc"], st["co"], st["f"]
        carry_c = torch.zeros_like(e[0])
    for t in range(T - 1, -1, -1):
        # G_t = e_t + ga_{t+1} W_hh  (+ the GRU's direct path G_{t+1} z_{t+1})
        if t == T - 1:
            gh = es[t]
        elif mode == "GRU":
            gh = linear(xr, WhhT, add=torch.addcmul(es[t], Gs[t + 1], st["z"][t + 1]))
        else:
            gh = linear(ga[t + 1], WhhT, add=es[t])
        Gs[t] = gh
        if mode.startswith("RNN"):
            torch.mul(gh, st["d"][t], out=ga[t])  # ga_t = G_t phi'(a_t)
        elif mode == "LSTM":
            gc = torch.addcmul(carry_c, gh, hc[t])  # gc = carry_c + G_t o (1 - tanh^2 c_t)
            torch.mul(c3[t], gc.unsqueeze(1), out=ga3[t])  # [ga_i, ga_f, ga_g] = gc dc_t/da_{i,f,g}
            torch.mul(gh, co[t], out=gao[t])  # ga_o = G_t tanh(c_t) o (1 - o)
            carry_c = gc * f[t]
        else:
            ga_n = gh * st["an"][t]
            ga_r, ga_z = ga_n * st["ar"][t], gh * st["az"][t]
            torch.cat([ga_r, ga_z, ga_n], -1, out=ga[t])
            xr = torch.cat([ga_r, ga_z, ga_n * st["r"][t]], -1)  # what W_hh sees: the reset gate scales W_hn h
    G = torch.stack(Gs)  # (T, B, H)
    if not below:
        return G, None
    WihT = P["weight_ih_l0"].T.contiguous()  # (I, G): linear(v, W_ih^T) = v W_ih
    return G, linear(ga_in.view(T * B, -1), WihT).view(T, B, -1)  # (T B, G) @ (G, I) -> (T, B, I)


@torch.no_grad()
def total_grads(rnn: nn.RNNBase, x: Tensor, hx, e_top: Tensor, twins: dict, top_out: Tensor | None = None
                ) -> list[Tensor]:
    """Per layer, the total dL/dh^l_t (T, B, H), time-major, of a unidirectional module run on x (T, B, I)
    from h0 ``hx`` (torch's layout or None), whose output received e_top (T, B, H) in the backward pass.
    ``top_out``: the module's own output, used for the top layer (its forward skipped) unless dropout between
    layers was active: then every layer is recomputed without it, so the states agree with one another.
    A recomputed LSTM layer runs its own forward keeping its gates (``_lstm_forward``); other kinds run
    torch's fused forward (their step tensors need no GEMM, or the GRU's two batched ones)."""
    L, H, mode = rnn.num_layers, rnn.hidden_size, rnn.mode
    B = x.shape[1]
    dropped = rnn.training and rnn.dropout > 0 and L > 1
    zeros = x.new_zeros(B, H)
    starts = []
    for l in range(L):
        if hx is None:
            starts.append((zeros, zeros if mode == "LSTM" else None))
        elif isinstance(hx, tuple):
            starts.append((hx[0][l], hx[1][l]))
        else:
            starts.append((hx[l], None))
    outs, steps, inp = [], [], x
    for l in range(L):
        P, (h0, c0) = layer_params(rnn, l), starts[l]
        if l == L - 1 and top_out is not None and not dropped:
            h, s = top_out, None
        elif mode == "LSTM":
            h, s = _lstm_forward(P, inp, h0, c0)
        else:
            h, s = fused_output(rnn, l, inp, h0, twins), None
        outs.append(h)
        steps.append(s)
        inp = h
    grads: list[Tensor] = [None] * L
    e = e_top
    for l in range(L - 1, -1, -1):
        inp = x if l == 0 else outs[l - 1]
        s, steps[l] = steps[l], None  # freed with the layer's chain
        grads[l], e = layer_chain(mode, layer_params(rnn, l), inp, outs[l], e, *starts[l], below=l > 0, s=s)
    return grads


def engine_net(rnn: nn.RNNBase, dtype: torch.dtype):
    """The engine's RecurrentNetwork with rnn's weights (copied), on the CPU."""
    from rnn_models.network import RecurrentNetwork

    from .own_model import _module_arch
    from .config import ExperimentConfig

    arch, act = _module_arch(rnn)
    cfg = ExperimentConfig.from_dict({**arch, "activation": act}).model_config(arch["input_size"])
    net = RecurrentNetwork(cfg, dtype=dtype)
    net.load_torch_state_dict({k: v.detach() for k, v in rnn.state_dict().items()})
    return net


def engine_total(rnn: nn.RNNBase, x: Tensor, hx, e_top: Tensor, net=None) -> list[Tensor]:
    """The same totals through the engine's network and autograd (any module, bidirectional included):
    L' = sum_t <e_t, y_t> has the same dL/dh_t as the training loss. Returns per layer (T, B, D*H).
    ``net``: ``engine_net(rnn, x.dtype)`` if already made (a background record makes it on the training thread)."""
    from .own_model import _module_arch, prepare_h0

    dev = x.device  # the engine's network runs on the CPU; the totals go back to the module's device
    x, e_top = x.detach().cpu(), e_top.cpu()
    hx = None if hx is None else (tuple(h.cpu() for h in hx) if isinstance(hx, tuple) else hx.cpu())
    arch, _ = _module_arch(rnn)
    if net is None:
        net = engine_net(rnn, x.dtype)
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
