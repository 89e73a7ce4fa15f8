"""Oracle cases for tensor ops and autograd (the foundation)."""
import torch

from registry import backward_grads, case


def _resolve(arg, tensors):
    # "$name" refers to an input tensor; anything else is a literal.
    if isinstance(arg, str) and arg.startswith("$"):
        return tensors[arg[1:]]
    if isinstance(arg, list):
        return [_resolve(a, tensors) for a in arg]
    return arg


@case("torch_fn")
def torch_fn(cfg, tensors):
    """Calls torch.<fn>(*args, **kwargs), or a Tensor method when cfg['method'],
    then backward with 'grad_out' if given. With cfg['exact'] the op runs in
    float64 and its results are rounded back to the inputs' dtype: the exact
    answer, for reductions that rnnkit accumulates in double (PyTorch's own
    float32 sums are off by a few units in the last place of the partial sums,
    more than a tight tolerance allows after cancellation)."""
    dtypes = {}
    if cfg.get("exact"):
        for name, t in list(tensors.items()):
            if t.is_floating_point():
                dtypes[name] = t.dtype
                tensors[name] = t.double()
    for name in cfg.get("grad_inputs", []):
        tensors[name].requires_grad_(True)
    args = [_resolve(a, tensors) for a in cfg.get("args", [])]
    kwargs = {k: _resolve(v, tensors) for k, v in cfg.get("kwargs", {}).items()}
    if cfg.get("method"):
        out = getattr(args[0], cfg["fn"])(*args[1:], **kwargs)
    elif cfg.get("functional"):
        out = getattr(torch.nn.functional, cfg["fn"])(*args, **kwargs)
    else:
        out = getattr(torch, cfg["fn"])(*args, **kwargs)
    if isinstance(out, (tuple, list)):
        out = out[0]
    result = backward_grads(out, cfg, tensors, {"out": out.detach().clone()})
    if dtypes:
        back = next(iter(dtypes.values()))
        result = {k: v.to(back) if v.is_floating_point() else v for k, v in result.items()}
    return result
