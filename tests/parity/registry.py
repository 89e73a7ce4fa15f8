"""Registry of oracle cases: @case("name") def f(cfg, tensors) -> dict."""
CASES = {}


def case(name):
    def register(fn):
        if name in CASES:
            raise ValueError("duplicate oracle case %r" % name)
        CASES[name] = fn
        return fn
    return register


def backward_grads(out, cfg, tensors, result):
    """Runs out.backward(grad_out) when the request carries 'grad_out' and
    adds 'grad_<name>' for every input listed in cfg['grad_inputs']."""
    if "grad_out" not in tensors:
        return result
    out.backward(tensors["grad_out"])
    for name in cfg.get("grad_inputs", []):
        g = tensors[name].grad
        if g is not None:
            result["grad_" + name] = g
    return result
