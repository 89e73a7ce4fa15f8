"""PyTorch side of bench/bench_lm.cpp: the same word-level language model
(Embedding -> Dropout -> stacked LSTM with inter-layer dropout -> Dropout ->
Linear -> CrossEntropyLoss, hidden state carried and detached between
batches), timed as one training step (zero_grad, forward, backward,
clip_grad_norm_ 0.25, SGD step) and one evaluation forward (eval mode,
no_grad) per batch; prints one JSON object on stdout.

  python3 bench_lm.py '{"ntoken": 10000, "emsize": 650, "nhid": 650, "layers": 2,
                        "bptt": 35, "batch": 20, "dropout": 0.5, "reps": 20, "threads": 1}'

The driver starts it once per thread count with OMP_NUM_THREADS and
OPENBLAS_NUM_THREADS set (they must be set before torch loads) and
OPENBLAS_CORETYPE removed; torch.set_num_threads gets the same count here.
Times are medians in milliseconds after two warm-up calls.
"""
import json
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_rnn_layers import median_ms  # noqa: E402  (the same timing, beside this script)


class WordLM(nn.Module):
    def __init__(self, ntoken, emsize, nhid, layers, dropout):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, emsize)
        self.rnn = nn.LSTM(emsize, nhid, layers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)

    def forward(self, x, hidden):
        output, hidden = self.rnn(self.drop(self.encoder(x)), hidden)
        return self.decoder(self.drop(output).reshape(-1, output.size(2))), hidden


def main():
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(1)
    model = WordLM(cfg["ntoken"], cfg["emsize"], cfg["nhid"], cfg["layers"], cfg["dropout"])
    opt = torch.optim.SGD(model.parameters(), lr=20.0)
    criterion = nn.CrossEntropyLoss()
    data = torch.randint(cfg["ntoken"], (cfg["bptt"] + 1, cfg["batch"]))
    inputs, targets = data[:-1], data[1:].reshape(-1)
    state = {"hidden": None}

    def train_step():
        opt.zero_grad()
        logits, hidden = model(inputs, state["hidden"])
        state["hidden"] = tuple(h.detach() for h in hidden)
        criterion(logits, targets).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    def evaluate():
        with torch.no_grad():
            logits, hidden = model(inputs, state["hidden"])
            state["hidden"] = hidden
            criterion(logits, targets).item()

    model.train()
    train_ms = median_ms(train_step, cfg["reps"], warmups=2)
    model.eval()
    eval_ms = median_ms(evaluate, cfg["reps"], warmups=2)
    json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "train_ms": train_ms,
               "eval_ms": eval_ms}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
