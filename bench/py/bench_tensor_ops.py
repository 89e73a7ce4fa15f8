"""PyTorch side of bench/bench_tensor_ops.cpp: the same float32 tensor ops on
the same shapes (values from a normal distribution), forward only, no graph;
prints one JSON object on stdout with a median in ms per op.

  python3 bench_tensor_ops.py '{"rows": 700, "cols": 10000, "reps": 15, "threads": 1,
                                "ops": ["exp", "softmax_rows", ...]}'

The driver starts it once per thread count with OMP_NUM_THREADS and
OPENBLAS_NUM_THREADS set before torch loads and OPENBLAS_CORETYPE removed;
torch.set_num_threads gets the same count here. Each result is kept until the
next call's is made, as on the rnnkit side.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_rnn_layers import median_ms  # noqa: E402  (the same timing, beside this script)


def main():
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(1)
    rows = torch.randn(cfg["rows"], cfg["cols"])
    slices = torch.randn(32, 50, 512)
    ops = {
        "exp": lambda: torch.exp(rows),
        "tanh": lambda: torch.tanh(rows),
        "sigmoid": lambda: torch.sigmoid(rows),
        "softmax_rows": lambda: torch.softmax(rows, 1),
        "log_softmax_rows": lambda: torch.log_softmax(rows, 1),
        "softmax_dim1": lambda: torch.softmax(slices, 1),
        "log_softmax_dim1": lambda: torch.log_softmax(slices, 1),
    }
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "ms": {}}
    held = {}
    with torch.no_grad():
        for name in cfg["ops"]:
            fn = ops[name]

            def call():
                held["y"] = fn()

            out["ms"][name] = median_ms(call, cfg["reps"], warmups=2)
            held.clear()
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
