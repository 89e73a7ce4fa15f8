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
    then backward with 'grad_out' if given."""
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
    result = {"out": out.detach().clone()}
    return backward_grads(out, cfg, tensors, result)
