"""Oracle cases for the recurrent layers, cells and packing (tests/nn/test_rnn_*.cpp).

One request carries many configurations: cfg["configs"][i] describes module i,
and its tensors arrive as "<i>.<name>". rnnkit's initial parameters come along
("<i>.w.<param name>") and are loaded into the torch module, so both sides run
the same weights.
"""
import warnings

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from registry import case

# dropout > 0 with num_layers == 1 is a legal configuration PyTorch warns about.
warnings.filterwarnings("ignore", message="dropout option adds dropout after all but last recurrent layer")

_LAYERS = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}
_CELLS = {"RNNCell": nn.RNNCell, "LSTMCell": nn.LSTMCell, "GRUCell": nn.GRUCell}


def _build(c):
    kind = c["kind"]
    if kind in _LAYERS:
        kwargs = dict(num_layers=c.get("num_layers", 1), bias=c.get("bias", True),
                      batch_first=c.get("batch_first", False), dropout=c.get("dropout", 0.0),
                      bidirectional=c.get("bidirectional", False))
        if kind == "LSTM" and c.get("proj_size", 0):
            kwargs["proj_size"] = c["proj_size"]
        if kind == "RNN":
            kwargs["nonlinearity"] = c.get("nonlinearity", "tanh")
        return _LAYERS[kind](c["input_size"], c["hidden_size"], **kwargs)
    kwargs = dict(bias=c.get("bias", True))
    if kind == "RNNCell":
        kwargs["nonlinearity"] = c.get("nonlinearity", "tanh")
    return _CELLS[kind](c["input_size"], c["hidden_size"], **kwargs)


def _run_one(c, t):
    """Forward and backward of one configuration; t holds its tensors (prefix removed)."""
    m = _build(c)
    params = {k[2:]: v for k, v in t.items() if k.startswith("w.")}
    dtype = t["x"].dtype
    m = m.to(dtype)
    m.load_state_dict(params, strict=True)
    if c.get("bf16_inference", False):
        # rnnkit's set_bf16_inference: W_hh rounded to bfloat16, nothing else.
        with torch.no_grad():
            for name, p in m.named_parameters():
                if name.startswith("weight_hh"):
                    p.copy_(p.bfloat16().to(dtype))
    products = c.get("bf16_products", False)
    if products:
        # rnnkit's set_bf16_products over one step (a cell, or a one-layer
        # layer of one step): the products take x, h0, W_ih and W_hh rounded
        # to bfloat16; nothing else is rounded.
        with torch.no_grad():
            for name, p in m.named_parameters():
                if name.startswith("weight_hh") or name.startswith("weight_ih"):
                    p.copy_(p.bfloat16().to(dtype))
    rounded = (lambda v: v.bfloat16().to(dtype)) if products else (lambda v: v)
    if c.get("eval", False):
        m.eval()
    x = rounded(t["x"]).clone().requires_grad_(True)
    h0 = rounded(t["h0"]).clone().requires_grad_(True) if "h0" in t else None
    c0 = t["c0"].clone().requires_grad_(True) if "c0" in t else None
    kind = c["kind"]
    out = {}
    if products and kind in ("GRU", "GRUCell"):
        # The GRU's h' = (1 - z) * n + z * h mixes in h itself, unrounded: its
        # step by hand, from torch's own ops, on the rounded products.
        return _gru_products_step(c, m, x, t["h0"] if "h0" in t else None, dtype)
    if kind in _CELLS:
        if kind == "LSTMCell":
            h, cc = m(x, (h0, c0) if h0 is not None else None)
            out["out"], out["c_n"] = h, cc
        else:
            out["out"] = m(x, h0)
    else:
        hx = None
        if h0 is not None:
            hx = (h0, c0) if kind == "LSTM" else h0
        if c.get("packed", False):
            lengths = t["lengths"]
            packed = pack_padded_sequence(x, lengths, batch_first=c.get("batch_first", False),
                                          enforce_sorted=False)
            y, state = m(packed, hx)
            total = x.size(1 if c.get("batch_first", False) else 0)
            y, _ = pad_packed_sequence(y, batch_first=c.get("batch_first", False), total_length=total)
        else:
            y, state = m(x, hx)
        out["out"] = y
        if kind == "LSTM":
            out["h_n"], out["c_n"] = state
        else:
            out["h_n"] = state
    loss = 0
    for name, g in (("out", "g_out"), ("h_n", "g_hn"), ("c_n", "g_cn")):
        if g in t and name in out:
            loss = loss + (out[name] * t[g]).sum()
    result = {k: v.detach().clone() for k, v in out.items()}
    if torch.is_tensor(loss) and loss.requires_grad:
        loss.backward()
        result["grad_x"] = x.grad
        if h0 is not None:
            result["grad_h0"] = h0.grad
        if c0 is not None:
            result["grad_c0"] = c0.grad
        for name, p in m.named_parameters():
            if p.grad is not None:
                result["grad_w." + name] = p.grad
    return result


def _gru_step(x_r, h, w_ih, w_hh, b_ih, b_hh):
    """One GRU step: the gates from x_r and h rounded (bfloat16 values), h' mixing in h."""
    h_r = h.bfloat16().to(h.dtype)
    gi = torch.nn.functional.linear(x_r, w_ih, b_ih)
    gh = torch.nn.functional.linear(h_r, w_hh, b_hh)
    i_r, i_z, i_n = gi.chunk(3, -1)
    h_r_, h_z, h_n = gh.chunk(3, -1)
    r = torch.sigmoid(i_r + h_r_)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def _gru_products_step(c, m, x_r, h0, dtype):
    """set_bf16_products over one step of a GRUCell, or a one-layer GRU of one step."""
    p = dict(m.named_parameters())
    bias = c.get("bias", True)
    with torch.no_grad():
        if c["kind"] == "GRUCell":
            h = h0 if h0 is not None else torch.zeros(x_r.shape[:-1] + (c["hidden_size"],), dtype=dtype)
            return {"out": _gru_step(x_r, h, p["weight_ih"], p["weight_hh"], p.get("bias_ih") if bias else None,
                                     p.get("bias_hh") if bias else None)}
        bf = c.get("batch_first", False)
        unbatched = x_r.dim() == 2
        xs = x_r[:, 0] if bf and not unbatched else x_r[0]  # the one step: [N, I] or [I]
        D = 2 if c.get("bidirectional", False) else 1
        outs = []
        for d in range(D):
            sfx = "_l0" + ("_reverse" if d == 1 else "")
            h = h0[d] if h0 is not None else torch.zeros(xs.shape[:-1] + (c["hidden_size"],), dtype=dtype)
            outs.append(_gru_step(xs, h, p["weight_ih" + sfx], p["weight_hh" + sfx],
                                  p.get("bias_ih" + sfx) if bias else None, p.get("bias_hh" + sfx) if bias else None))
        y = torch.cat(outs, -1)
        y = y.unsqueeze(1) if bf and not unbatched else y.unsqueeze(0)
        return {"out": y, "h_n": torch.stack(outs, 0)}


def _split(tensors, i):
    prefix = "%d." % i
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


@case("rnn_batch")
def rnn_batch(cfg, tensors):
    """Runs every configuration of cfg["configs"]; outputs come back as "<i>.<name>"."""
    result = {}
    for i, c in enumerate(cfg["configs"]):
        for k, v in _run_one(c, _split(tensors, i)).items():
            if v is not None:
                result["%d.%s" % (i, k)] = v
    return result


@case("rnn_repr")
def rnn_repr(cfg, tensors):
    """repr(module) as int64 byte values, and its parameter count, per configuration."""
    result = {}
    for i, c in enumerate(cfg["configs"]):
        m = _build(c)
        result["%d.repr" % i] = torch.tensor(list(repr(m).encode()), dtype=torch.int64)
        result["%d.count" % i] = torch.tensor([sum(p.numel() for p in m.parameters()),
                                               len(list(m.parameters()))], dtype=torch.int64)
        names = ",".join(n for n, _ in m.named_parameters())
        result["%d.names" % i] = torch.tensor(list(names.encode()), dtype=torch.int64)
    return result


@case("packing")
def packing(cfg, tensors):
    """pack_padded_sequence / pad_packed_sequence / pad_sequence / pack_sequence with gradients.

    cfg: {"op": ..., "batch_first": bool, "enforce_sorted": bool, "padding_value": float,
          "total_length": int or None, "count": number of sequences for the list ops}
    """
    op = cfg["op"]
    bf = cfg.get("batch_first", False)
    res = {}
    if op == "pack_pad":
        x = tensors["x"].clone().requires_grad_(True)
        p = pack_padded_sequence(x, tensors["lengths"], batch_first=bf,
                                 enforce_sorted=cfg.get("enforce_sorted", True))
        padded, lengths = pad_packed_sequence(p, batch_first=bf, padding_value=cfg.get("padding_value", 0.0),
                                              total_length=cfg.get("total_length"))
        res["data"] = p.data.detach().clone()
        res["batch_sizes"] = p.batch_sizes
        if p.sorted_indices is not None:
            res["sorted_indices"] = p.sorted_indices
            res["unsorted_indices"] = p.unsorted_indices
        res["padded"] = padded.detach().clone()
        res["lengths"] = lengths
        (padded * tensors["g"]).sum().backward()
        res["grad_x"] = x.grad
    elif op in ("pad_sequence", "pack_sequence"):
        seqs = [tensors["s%d" % i].clone().requires_grad_(True) for i in range(cfg["count"])]
        if op == "pad_sequence":
            y = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=bf, padding_value=cfg.get("padding_value", 0.0))
            res["out"] = y.detach().clone()
        else:
            p = torch.nn.utils.rnn.pack_sequence(seqs, enforce_sorted=cfg.get("enforce_sorted", True))
            y = p.data
            res["out"] = y.detach().clone()
            res["batch_sizes"] = p.batch_sizes
        (y * tensors["g"]).sum().backward()
        for i, s in enumerate(seqs):
            res["grad_s%d" % i] = s.grad
    else:
        raise ValueError("unknown packing op %r" % op)
    return res
