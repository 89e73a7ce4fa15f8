"""End-to-end training references: the seed models trained in PyTorch from
rnnkit's initial weights on rnnkit's batches, returning per-step losses and
the final weights."""
import torch
import torch.nn as nn

from registry import case


class RNNModel(nn.Module):
    """Embedding -> multi-layer LSTM -> Linear (the word language model)."""

    def __init__(self, ntoken, ninp, nhid, nlayers, dropout):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)

    def forward(self, x, hidden):
        emb = self.drop(self.encoder(x))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        return self.decoder(output.view(-1, output.size(2))), hidden


class BiGRUClassifier(nn.Module):
    """Embedding(padding_idx=0) -> packed bidirectional GRU -> Linear on [h_fwd, h_bwd]."""

    def __init__(self, vocab, emb, hidden, classes):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb, padding_idx=0)
        self.rnn = nn.GRU(emb, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, text, lengths):
        out = self.embedding(text)
        packed = nn.utils.rnn.pack_padded_sequence(out, lengths, batch_first=True, enforce_sorted=False)
        _, h = self.rnn(packed)
        return self.fc(torch.cat((h[-2], h[-1]), dim=1))


def _load(model, t):
    sd = {k[len("param."):]: v for k, v in t.items() if k.startswith("param.")}
    model.load_state_dict(sd, strict=True)


def _result(model, losses):
    out = {"losses": torch.tensor(losses, dtype=torch.float64)}
    for k, v in model.state_dict().items():
        out["param." + k] = v
    return out


@case("train_language_model")
def train_language_model(cfg, t):
    torch.manual_seed(0)
    model = RNNModel(cfg["ntoken"], cfg["ninp"], cfg["nhid"], cfg["nlayers"], cfg["dropout"])
    if t["param.encoder.weight"].dtype == torch.float64:
        model.double()
    _load(model, t)
    model.eval()  # dropout off: the two frameworks draw different masks
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], eps=cfg["eps"])
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg["step_size"], gamma=cfg["gamma"])
    crit = nn.CrossEntropyLoss()
    data = t["data"]  # [steps, bptt + 1, batch]
    hidden = None
    losses = []
    for s in range(data.shape[0]):
        x, y = data[s, :-1], data[s, 1:]
        if hidden is not None:
            hidden = tuple(h.detach() for h in hidden)
        opt.zero_grad()
        logits, hidden = model(x, hidden)
        loss = crit(logits, y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["clip"])
        opt.step()
        sched.step()
        losses.append(loss.item())
    return _result(model, losses)


@case("train_bigru_classifier")
def train_bigru_classifier(cfg, t):
    model = BiGRUClassifier(cfg["vocab"], cfg["emb"], cfg["hidden"], cfg["classes"])
    if t["param.embedding.weight"].dtype == torch.float64:
        model.double()
    _load(model, t)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], eps=cfg["eps"])
    crit = nn.CrossEntropyLoss()
    texts, lengths, labels = t["texts"], t["lengths"], t["labels"]  # [steps, N, L], [steps, N], [steps, N]
    losses = []
    for s in range(texts.shape[0]):
        opt.zero_grad()
        loss = crit(model(texts[s], lengths[s]), labels[s])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["clip"])
        opt.step()
        losses.append(loss.item())
    return _result(model, losses)
