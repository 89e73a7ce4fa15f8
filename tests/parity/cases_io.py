"""Oracle cases for rnnkit's files: interop with the reference safetensors
implementation (the `safetensors` package) and with PyTorch through
tools/pt2safetensors.py. Paths come in the config; the C++ side writes or
reads the same files.

Metadata travels back as "__meta__": the UTF-8 bytes of a JSON object in an
int64 tensor (the oracle's replies carry tensors only).
"""
import collections
import importlib.util
import json
import os
import subprocess
import sys

import torch

from registry import case

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_TOOL = os.path.join(_ROOT, "tools", "pt2safetensors.py")


def _reference():
    try:
        import safetensors  # noqa: F401
        import safetensors.numpy
        import safetensors.torch
    except ImportError as e:
        raise RuntimeError("the reference implementation is missing for %s (%s): install the `safetensors` "
                           "package for it (scripts/setup.sh does)" % (sys.executable, e))
    return safetensors


def _tool():
    spec = importlib.util.spec_from_file_location("pt2safetensors", _TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _text_tensor(obj):
    return torch.tensor(list(json.dumps(obj, sort_keys=True).encode("utf-8")), dtype=torch.int64)


def _run_tool(*args, new_process=False):
    """Runs tools/pt2safetensors.py: as a command (new_process) or through its
    main() here, which skips a Python and torch start-up per call."""
    if new_process:
        proc = subprocess.run([sys.executable, _TOOL] + list(args), capture_output=True, text=True)
        rc, err = proc.returncode, proc.stderr
    else:
        rc, err = _tool().main(list(args)), "(see stderr)"
    if rc != 0:
        raise RuntimeError("pt2safetensors %s failed (%d): %s" % (" ".join(args), rc, err))


def _same(a, b):
    """Same dtype, shape and bytes (NaN payloads and -0.0 included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    ta, tb = a.contiguous(), b.contiguous()
    if ta.dtype == torch.bfloat16:
        ta, tb = ta.view(torch.int16), tb.view(torch.int16)
    return ta.numpy().tobytes() == tb.numpy().tobytes()


@case("io_reference_read")
def io_reference_read(cfg, t):
    """Reads cfg['path'] with the reference implementation (cfg['api']:
    'numpy' load_file, 'torch' load_file, or 'safe_open'); returns its
    tensors as "t.<name>", the metadata and the keys in "__meta__"."""
    st = _reference()
    path, api = cfg["path"], cfg.get("api", "numpy")
    if api == "numpy":
        tensors = {k: torch.from_numpy(v.copy()) for k, v in st.numpy.load_file(path).items()}
    elif api == "torch":
        tensors = st.torch.load_file(path)
    else:
        with st.safe_open(path, framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    with st.safe_open(path, framework="np") as f:
        metadata = f.metadata() or {}
    out = {"t." + k: v for k, v in tensors.items()}
    out["__meta__"] = _text_tensor({"metadata": metadata, "keys": sorted(tensors)})
    return out


@case("io_reference_write")
def io_reference_write(cfg, t):
    """Writes the request's tensors to cfg['path'] with the reference
    implementation (cfg['api'] 'numpy' or 'torch') and cfg['metadata']."""
    st = _reference()
    metadata = cfg.get("metadata") or None
    if cfg.get("api", "torch") == "numpy":
        st.numpy.save_file({k: v.numpy() for k, v in t.items()}, cfg["path"], metadata=metadata)
    else:
        st.torch.save_file(dict(t), cfg["path"], metadata=metadata)
    return {}


@case("io_reference_resave")
def io_reference_resave(cfg, t):
    """Loads cfg['src'] with the reference implementation and saves the same
    tensors and metadata to cfg['dst'] (its own layout and order)."""
    st = _reference()
    with st.safe_open(cfg["src"], framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    st.torch.save_file(tensors, cfg["dst"], metadata=metadata)
    return {}


@case("io_tool_read")
def io_tool_read(cfg, t):
    """Reads cfg['path'] with tools/pt2safetensors.py's reader (which checks
    rnnkit's checksum in Python) and returns what it found."""
    tool = _tool()
    tensors, metadata = tool.read_safetensors(cfg["path"])
    out = {"t." + k: v for k, v in tensors.items()}
    out["__meta__"] = _text_tensor({"metadata": metadata, "keys": list(tensors)})
    return out


@case("io_tool_write")
def io_tool_write(cfg, t):
    """Writes the request's tensors with tools/pt2safetensors.py's writer."""
    _tool().write_safetensors(cfg["path"], collections.OrderedDict(t), cfg.get("metadata"),
                              checksum=cfg.get("checksum", True))
    return {}


@case("io_pt_roundtrip")
def io_pt_roundtrip(cfg, t):
    """torch.save(request tensors) -> tool -> safetensors -> tool -> .pt, run
    as commands; returns "identical" (keys, order, dtypes, bytes)
    and leaves the safetensors file at cfg['dir']/model.safetensors for the
    C++ side. cfg['half'] adds float16/bfloat16/int32 tensors to the .pt."""
    d = cfg["dir"]
    sd = collections.OrderedDict(t)
    if cfg.get("half"):
        g = torch.Generator().manual_seed(cfg.get("seed", 0))
        sd["half.f16"] = torch.randn(3, 5, generator=g).half()
        sd["half.bf16"] = torch.randn(4, generator=g).bfloat16()
        sd["half.i32"] = torch.randint(-9, 9, (2, 2), generator=g, dtype=torch.int32)
        sd["half.f16_transposed"] = torch.randn(3, 4, generator=g).half().t()
    pt_in, st_mid, pt_out = (os.path.join(d, n) for n in ("in.pt", "model.safetensors", "out.pt"))
    torch.save(sd, pt_in)
    _run_tool(pt_in, st_mid, new_process=True)
    _run_tool(st_mid, pt_out, new_process=True)
    back = torch.load(pt_out, map_location="cpu")
    identical = list(back) == list(sd) and all(_same(back[k], sd[k].contiguous()) for k in sd)
    return {"identical": torch.tensor(int(identical))}


class _Net(torch.nn.Module):
    """Embedding -> LSTM (batch_first) -> Linear, as the C++ test builds it."""

    def __init__(self, cfg):
        super().__init__()
        hidden, proj = cfg["hidden"], cfg.get("proj", 0)
        directions = 2 if cfg.get("bidirectional") else 1
        self.embedding = torch.nn.Embedding(cfg["vocab"], cfg["embed"])
        self.lstm = torch.nn.LSTM(cfg["embed"], hidden, cfg["layers"], batch_first=True,
                                  bidirectional=bool(cfg.get("bidirectional")), proj_size=proj)
        self.fc = torch.nn.Linear(directions * (proj or hidden), cfg["vocab"])

    def forward(self, tokens):
        out, (h, c) = self.lstm(self.embedding(tokens))
        return {"logits": self.fc(out), "h_n": h, "c_n": c}


@case("io_model_from_torch")
def io_model_from_torch(cfg, t):
    """PyTorch builds the model (seed cfg['seed']), torch.save's its
    state_dict and converts it with the tool to cfg['dir']/torch_model.safetensors;
    returns its outputs on t['tokens']."""
    torch.manual_seed(cfg["seed"])
    net = _Net(cfg).eval()
    pt = os.path.join(cfg["dir"], "torch_model.pt")
    torch.save(net.state_dict(), pt)
    _run_tool(pt, os.path.join(cfg["dir"], "torch_model.safetensors"))
    with torch.no_grad():
        return net(t["tokens"])


@case("io_model_to_torch")
def io_model_to_torch(cfg, t):
    """Converts cfg['path'] (written by rnnkit; cfg['key'] picks a training
    checkpoint's section) to .pt with the tool, loads it strictly into a fresh
    PyTorch model and returns its outputs on t['tokens']."""
    torch.manual_seed(cfg["seed"] + 1)  # different initial weights: the load must replace them all
    net = _Net(cfg).eval()
    pt = os.path.join(cfg["dir"], "from_rnnkit.pt")
    _run_tool(cfg["path"], pt, *(["--key", cfg["key"]] if cfg.get("key") else []))
    net.load_state_dict(torch.load(pt), strict=True)
    with torch.no_grad():
        return net(t["tokens"])
