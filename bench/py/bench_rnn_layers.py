"""PyTorch side of bench/bench_rnn_layers.cpp: times torch.nn.{LSTM,GRU,RNN}
forward (inference, under no_grad) and forward + backward (dL/dx and every
parameter gradient) and prints one JSON object on stdout. The cells
(LSTMCell, GRUCell, RNNCell) are called step by step over the steps, the state
carried on and the outputs stacked, as the driver calls rnnkit's.

  python3 bench_rnn_layers.py '{"cells": ["LSTM"], "input": 512, "hidden": 512,
                                "batch": 64, "steps": 25, "reps": 10, "threads": 1}'

The driver starts it once per thread count with OMP_NUM_THREADS and
OPENBLAS_NUM_THREADS set (they must be set before torch loads) and
OPENBLAS_CORETYPE removed; torch.set_num_threads gets the same count here.
Times are medians in milliseconds after one warm-up call.
"""
import json
import statistics
import sys
import time

import torch


def median_ms(fn, reps, warmups=1):
    for _ in range(warmups):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def blas_libraries():
    """The BLAS shared objects this process loaded (torch picks one at import)."""
    found = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "blas" in path.rsplit("/", 1)[-1].lower():
                found.add(path)
    return sorted(found)


def main():
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    inp, hid, n, t, reps = cfg["input"], cfg["hidden"], cfg["batch"], cfg["steps"], cfg["reps"]
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "blas": blas_libraries(), "cells": {}}
    for cell in cfg["cells"]:
        layers, bidir = cfg.get("layers", 1), cfg.get("bidirectional", False)
        proj = cfg.get("proj", 0) if cell == "LSTM" else 0
        dy = torch.randn(t, n, (2 if bidir else 1) * (proj or hid))
        if cell.endswith("Cell"):
            layer = getattr(torch.nn, cell)(inp, hid)
            inputs = [torch.randn(n, inp, requires_grad=True) for _ in range(t)]

            def run(layer=layer, inputs=inputs, lstm=cell == "LSTMCell"):
                state, ys = None, []
                for x_t in inputs:
                    state = layer(x_t, state)
                    ys.append(state[0] if lstm else state)
                return torch.stack(ys)
        else:
            kwargs = {"proj_size": proj} if proj else {}
            layer = getattr(torch.nn, cell)(inp, hid, num_layers=layers, bidirectional=bidir, **kwargs)
            inputs = [torch.randn(t, n, inp, requires_grad=True)]

            def run(layer=layer, inputs=inputs):
                return layer(inputs[0])[0]

        def forward(run=run):
            with torch.no_grad():
                run()

        def train_step(layer=layer, inputs=inputs, run=run, dy=dy):
            layer.zero_grad(set_to_none=True)
            for x in inputs:
                x.grad = None
            run().backward(dy)

        out["cells"][cell] = {"forward_ms": median_ms(forward, reps), "train_ms": median_ms(train_step, reps)}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
