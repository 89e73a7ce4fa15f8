"""Oracle cases for rnnkit's nn layers, functional forms, initialisation and losses.

Modules are described by a JSON spec that the C++ tests build too:
  {"type": "Linear", "args": [3, 4], "kwargs": {"bias": false}}
  {"type": "Sequential", "children": [spec, ...]}   or  "named": [[name, spec], ...]
  {"type": "ModuleList", "children": [...]}, {"type": "ModuleDict", "named": [[key, spec], ...]}
  {"type": "Custom", "name": "Net", "children": [[name, spec], ...]}   (a bare nn.Module subclass)
Strings (reprs, error messages, key lists) travel as int64 tensors of UTF-8 bytes.
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from registry import case

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def text(s):
    return torch.tensor(list(s.encode("utf-8")), dtype=torch.int64)


def build(spec, tensors=None):
    kind = spec["type"]
    if kind == "Custom":
        m = type(spec["name"], (nn.Module,), {})()
        for name, child in spec.get("children", []):
            m.add_module(name, build(child, tensors))
        return m
    if kind == "Sequential":
        if "named" in spec:
            return nn.Sequential(OrderedDict((n, build(c, tensors)) for n, c in spec["named"]))
        return nn.Sequential(*[build(c, tensors) for c in spec["children"]])
    if kind == "ModuleList":
        return nn.ModuleList([build(c, tensors) for c in spec["children"]])
    if kind == "ModuleDict":
        return nn.ModuleDict(OrderedDict((n, build(c, tensors)) for n, c in spec["named"]))
    kwargs = dict(spec.get("kwargs", {}))
    for name in spec.get("tensor_kwargs", []):  # e.g. a loss's class weight, sent as a tensor
        kwargs[name] = tensors[name]
    args = [tuple(a) if isinstance(a, list) else a for a in spec.get("args", [])]
    return getattr(nn, kind)(*args, **kwargs)


def load_params(module, tensors, dtype):
    module.to(dtype)
    state = {k[2:]: v for k, v in tensors.items() if k.startswith("p.")}
    module.load_state_dict(state, strict=True)


@case("nn_module")
def nn_module(cfg, t):
    """Builds cfg['spec'], loads rnnkit's parameters (p.<name>), runs x through
    it and backward with grad_out; returns out, grad_x, g.<param> and the repr."""
    m = build(cfg["spec"], t)
    load_params(m, t, DTYPES[cfg.get("dtype", "float32")])
    m.train(cfg.get("train", False))
    x = t["x"]
    if x.is_floating_point():
        x.requires_grad_(True)
    out = m(x)
    result = {"out": out.detach().clone(), "repr": text(repr(m))}
    if "grad_out" in t:
        out.backward(t["grad_out"])
        if x.grad is not None:
            result["grad_x"] = x.grad
        for name, p in m.named_parameters():
            if p.grad is not None:
                result["g." + name] = p.grad
    for name, p in m.named_parameters():  # after forward: max_norm renormalises in place
        result["after." + name] = p.detach().clone()
    return result


@case("nn_describe")
def nn_describe(cfg, t):
    """repr, state_dict keys (newline-separated), named_parameters names,
    parameter count and, per state_dict entry, a freshly initialised value."""
    torch.manual_seed(cfg.get("seed", 0))
    m = build(cfg["spec"], t)
    sd = m.state_dict()
    result = {
        "repr": text(repr(m)),
        "keys": text("\n".join(sd.keys())),
        "param_names": text("\n".join(n for n, _ in m.named_parameters())),
        "param_count": torch.tensor([sum(p.numel() for p in m.parameters())]),
    }
    for k, v in sd.items():
        result["init." + k] = v.detach().clone()
    return result


@case("nn_load_state_dict_error")
def nn_load_state_dict_error(cfg, t):
    """load_state_dict(strict) of the tensors given (prefixed p.) into cfg['spec']; returns the message."""
    m = build(cfg["spec"], t)
    state = {k[2:]: v for k, v in t.items() if k.startswith("p.")}
    try:
        m.load_state_dict(state, strict=cfg.get("strict", True))
    except RuntimeError as e:
        return {"message": text(str(e))}
    return {"ok": torch.tensor([1])}


@case("nn_loss")
def nn_loss(cfg, t):
    """Loss module cfg['spec'] (weights as tensor_kwargs) on input/target; backward with grad_out."""
    m = build(cfg["spec"], t)
    x = t["input"].requires_grad_(True)
    target = t["target"]
    if cfg.get("target_grad") and target.is_floating_point():
        target.requires_grad_(True)
    out = m(x, target)
    result = {"out": out.detach().clone()}
    out.backward(t["grad_out"])
    result["grad_input"] = x.grad
    if target.grad is not None:
        result["grad_target"] = target.grad
    return result


def _resolve(arg, tensors):
    if isinstance(arg, str) and arg.startswith("$"):
        return tensors[arg[1:]]
    if isinstance(arg, list):
        return [_resolve(a, tensors) for a in arg]
    if isinstance(arg, dict):
        return {k: _resolve(v, tensors) for k, v in arg.items()}
    return arg


@case("nn_error")
def nn_error(cfg, t):
    """Calls F.<fn>(*args, **kwargs) or module spec(*args) expecting an exception; returns its message."""
    try:
        args = _resolve(cfg.get("args", []), t)
        kwargs = _resolve(cfg.get("kwargs", {}), t)
        if "spec" in cfg:
            build(cfg["spec"], t)(*args, **kwargs)
        else:
            getattr(F, cfg["fn"])(*args, **kwargs)
    except Exception as e:  # ValueError, RuntimeError, IndexError: PyTorch's message is what counts
        return {"message": text(str(e))}
    return {"ok": torch.tensor([1])}


@case("nn_init")
def nn_init(cfg, t):
    """A tensor of cfg['shape'] filled by torch.nn.init.<fn>(**kwargs), plus fans and gain."""
    torch.manual_seed(cfg.get("seed", 0))
    w = torch.empty(cfg["shape"], dtype=torch.float64)
    getattr(nn.init, cfg["fn"])(w, **cfg.get("kwargs", {}))
    result = {"sample": w}
    if len(cfg["shape"]) >= 2:
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
        result["fans"] = torch.tensor([fan_in, fan_out])
    return result


@case("nn_gain")
def nn_gain(cfg, t):
    return {"gain": torch.tensor([nn.init.calculate_gain(cfg["nonlinearity"], cfg.get("param"))],
                                 dtype=torch.float64)}
