"""Oracle cases for rnnkit::optim: optimizers, LR schedulers, gradient clipping."""
import math

import torch

from registry import case

# Group keys that are PyTorch implementation switches, not hyperparameters.
_SWITCHES = {"params", "foreach", "differentiable", "capturable", "fused"}


def _number(value):
    if value in ("inf", "-inf", "nan"):
        return float(value)  # JSON has no such numbers
    return value


def _group_tensors(optimizer):
    """param_groups as rnnkit's state_dict names them: param_groups.<g>.<option>,
    tuples as <option>.<i>, bools as 0/1, all 0-d float64."""
    out = {}
    for g, group in enumerate(optimizer.param_groups):
        for key, value in group.items():
            if key in _SWITCHES:
                continue
            prefix = "param_groups.%d.%s" % (g, key)
            values = value if isinstance(value, (tuple, list)) else [value]
            names = ["%s.%d" % (prefix, i) for i in range(len(values))] if isinstance(value, (tuple, list)) else [prefix]
            for name, v in zip(names, values):
                out[name] = torch.tensor(float(v), dtype=torch.float64)
    return out


def _state_tensors(optimizer, params):
    """Per-parameter state as state.<i>.<name>; step as 0-d float64."""
    out = {}
    for i, p in enumerate(params):
        for name, value in optimizer.state.get(p, {}).items():
            if value is None:
                continue
            if name == "step":
                value = torch.tensor(float(value), dtype=torch.float64)
            out["state.%d.%s" % (i, name)] = value.detach().clone()
    return out


def _build_optimizer(cfg, params):
    cls = getattr(torch.optim, cfg["optimizer"])
    groups = []
    for g in cfg["groups"]:
        group = {"params": [params[i] for i in g["params"]]}
        group.update({k: _number(v) for k, v in g.get("options", {}).items()})
        groups.append(group)
    defaults = {k: _number(v) for k, v in cfg.get("defaults", {}).items()}
    return cls(groups, **defaults)


@case("optim_run")
def optim_run(cfg, t):
    """Runs cfg['steps'] optimizer steps with the gradients g<s>_<i> (a missing
    one means no gradient that step); returns p<s>_<i> after every step, the
    final state and the param groups."""
    n = cfg["num_params"]
    params = [t["p%d" % i].clone().requires_grad_(True) for i in range(n)]
    opt = _build_optimizer(cfg, params)
    out = {}
    for s in range(cfg["steps"]):
        for i, p in enumerate(params):
            key = "g%d_%d" % (s, i)
            p.grad = t[key].clone() if key in t else None
        opt.step()
        for i, p in enumerate(params):
            out["p%d_%d" % (s, i)] = p.detach().clone()
    out.update(_state_tensors(opt, params))
    out.update(_group_tensors(opt))
    return out


@case("optim_construct")
def optim_construct(cfg, t):
    """Builds an optimizer (to see PyTorch's error for bad options)."""
    params = [torch.zeros(2, requires_grad=True)]
    _build_optimizer(dict(cfg, groups=[{"params": [0]}]), params)
    return {}


def _build_scheduler(spec, opt):
    kwargs = {k: _number(v) for k, v in spec.get("kwargs", {}).items()}
    return getattr(torch.optim.lr_scheduler, spec["name"])(opt, **kwargs)


@case("sched_run")
def sched_run(cfg, t):
    """Builds an optimizer with cfg['lrs'] per group and the schedulers in
    cfg['schedulers'] (in order), steps them cfg['steps'] times; returns lr
    [steps + 1, groups] (row 0: after construction) and, with cfg['momentum'],
    the groups' momentum (or beta1) the same way. ReduceLROnPlateau steps with
    metrics[s]."""
    lrs = cfg["lrs"]
    params = [torch.zeros(3, requires_grad=True) for _ in lrs]
    opt_cfg = {"optimizer": cfg["optimizer"], "defaults": cfg.get("defaults", {}),
               "groups": [{"params": [i], "options": {"lr": lr}} for i, lr in enumerate(lrs)]}
    opt = _build_optimizer(opt_cfg, params)
    scheds = [_build_scheduler(spec, opt) for spec in cfg["schedulers"]]

    def momentum(group):
        return group["betas"][0] if "betas" in group else group["momentum"]

    lr_rows, mom_rows = [], []
    record = lambda: (lr_rows.append([g["lr"] for g in opt.param_groups]),
                      mom_rows.append([momentum(g) for g in opt.param_groups]) if cfg.get("momentum") else None)
    record()
    for s in range(cfg["steps"]):
        opt.step()  # no gradients: a no-op that keeps PyTorch's call-order warning quiet
        for sched in scheds:
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(float(t["metrics"][s]))
            else:
                sched.step()
        record()
    out = {"lr": torch.tensor(lr_rows, dtype=torch.float64)}
    if cfg.get("momentum"):
        out["momentum"] = torch.tensor(mom_rows, dtype=torch.float64)
    return out


@case("sched_construct")
def sched_construct(cfg, t):
    """Builds a scheduler (to see PyTorch's error for bad options), or steps it
    cfg['steps'] times."""
    params = [torch.zeros(2, requires_grad=True)]
    opt = _build_optimizer({"optimizer": cfg["optimizer"], "defaults": cfg.get("defaults", {}),
                            "groups": [{"params": [0]}]}, params)
    sched = _build_scheduler(cfg["scheduler"], opt)
    for _ in range(cfg.get("steps", 0)):
        opt.step()
        sched.step()
    return {}


@case("clip_grad")
def clip_grad(cfg, t):
    """clip_grad_norm_ (cfg['mode'] == 'norm') or clip_grad_value_ on
    parameters whose gradients are g<i> (parameters listed in cfg['no_grad']
    have none); returns the clipped g<i> and total_norm."""
    n = cfg["num_params"]
    params = []
    for i in range(n):
        p = torch.zeros(cfg["shapes"][i], dtype=getattr(torch, cfg["dtype"]), requires_grad=True)
        if i not in cfg.get("no_grad", []):
            p.grad = t["g%d" % i].clone()
        params.append(p)
    out = {}
    if cfg["mode"] == "norm":
        total = torch.nn.utils.clip_grad_norm_(params, _number(cfg["max_norm"]), _number(cfg["norm_type"]),
                                               error_if_nonfinite=cfg.get("error_if_nonfinite", False))
        out["total_norm"] = total.to(torch.float64).reshape(())
    else:
        torch.nn.utils.clip_grad_value_(params, _number(cfg["clip_value"]))
    for i, p in enumerate(params):
        if p.grad is not None:
            out["g%d" % i] = p.grad
    return out
