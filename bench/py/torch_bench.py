"""PyTorch side of `rnnkit bench`: times torch.nn.{RNN,LSTM,GRU} on the rows it is
given and prints one JSON object on stdout.

The C++ driver starts this script once per BLAS thread setting (the environment
variables OPENBLAS_NUM_THREADS / OMP_NUM_THREADS must be set before torch loads),
with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from the environment. Inside,
every row is timed with each torch intra-op thread count given by --threads, and
the driver keeps the best combination per row.

  --rows JSON      [{"cell": "lstm", "hidden": 128, "batch": 1, "steps": 256}, ...]
  --threads 1,2    torch.set_num_threads values to try
  --mode time      forward inference (inference_mode) and forward training +
                   backward (dL/dx and every parameter gradient), median ms
  --mode memory    peak resident-memory growth of one training step (run with
                   MALLOC_MMAP_THRESHOLD_ fixed so freed buffers leave the RSS, one
                   row per process)

Timing per row and thread count: one warm-up call, then repetitions until
--reps calls or --budget seconds, whichever comes first (at least one timed
call; when the warm-up alone exceeds the budget it is the timed call).
"""
import argparse
import gc
import json
import os
import statistics
import sys
import time

import torch


def blas_library():
    """Real path of the BLAS shared object torch loaded, for the report."""
    found = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1] if "/" in line else ""
                name = os.path.basename(path)
                if "blas" in name.lower() or "openblas" in path.lower():
                    found.add(os.path.realpath(path))
    except OSError:
        pass
    return sorted(found)


def make_layer(cell, hidden):
    if cell == "lstm":
        return torch.nn.LSTM(hidden, hidden)
    if cell == "gru":
        return torch.nn.GRU(hidden, hidden)
    if cell in ("rnn_tanh", "rnn_relu"):
        return torch.nn.RNN(hidden, hidden, nonlinearity=cell[4:])
    raise ValueError(f"unknown cell {cell!r}")


def make_problem(row):
    torch.manual_seed(0)
    layer = make_layer(row["cell"], row["hidden"])
    # x: [T, N, I] (sequence first), dy: [T, N, H]
    x = torch.randn(row["steps"], row["batch"], row["hidden"]) * 0.5
    dy = torch.randn(row["steps"], row["batch"], row["hidden"])
    return layer, x, dy


def forward_inference(layer, x):
    with torch.inference_mode():
        layer(x)


def training_step(layer, x, dy):
    for p in layer.parameters():
        p.grad = None
    x.grad = None
    y, _ = layer(x)
    y.backward(dy)


def timed(fn, reps, budget):
    """Median seconds of fn() after one warm-up call (see module docstring)."""
    t0 = time.perf_counter()
    fn()
    warm = time.perf_counter() - t0
    if warm >= budget:
        return warm, 1
    times = []
    start = time.perf_counter()
    while len(times) < reps and (not times or time.perf_counter() - start < budget):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def peak_training_bytes(layer, x, dy):
    """Peak RSS growth of one training step, gradients included (set to None first)."""
    # Warm-up on two steps of one sequence: starts the thread pool and the autograd
    # engine without paying for a whole step (minutes on a slow BLAS).
    training_step(layer, x[:2, :1].detach().requires_grad_(True), dy[:2, :1])
    for p in layer.parameters():
        p.grad = None
    x.grad = None
    gc.collect()
    base = rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    training_step(layer, x, dy)
    return (rss_kib("VmHWM") - base) * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", required=True)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--mode", choices=("time", "memory"), default="time")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--budget", type=float, default=2.0)
    args = ap.parse_args()
    rows = json.loads(args.rows)
    thread_counts = [int(t) for t in args.threads.split(",") if t]
    out = {
        "torch": torch.__version__,
        "blas": blas_library(),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "rows": [],
    }
    for row in rows:
        layer, x, dy = make_problem(row)
        if args.mode == "memory":
            torch.set_num_threads(thread_counts[0])
            x.requires_grad_(True)
            layer.train()
            out["rows"].append(dict(row, peak_train_bytes=peak_training_bytes(layer, x, dy)))
            continue
        for threads in thread_counts:
            torch.set_num_threads(threads)
            layer.eval()
            x.requires_grad_(False)
            fwd, fwd_reps = timed(lambda: forward_inference(layer, x), args.reps, args.budget)
            layer.train()
            x.requires_grad_(True)
            train, train_reps = timed(lambda: training_step(layer, x, dy), args.reps, args.budget)
            out["rows"].append(dict(row, threads=threads, fwd_ms=fwd * 1e3, fwd_reps=fwd_reps,
                                    train_ms=train * 1e3, train_reps=train_reps))
        print(json.dumps({"progress": row}), file=sys.stderr, flush=True)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
