"""PyTorch oracle for rnnkit's parity tests.

Reads requests from stdin and writes replies to stdout. Each message is an
8-byte little-endian length followed by a safetensors blob. A request's
metadata names the case and carries its JSON config; its tensors are the
inputs. The reply holds the case's output tensors, or metadata "error" with
the traceback.

Cases live in cases_*.py beside this file and register with @case("name").
"""
import importlib
import json
import os
import struct
import sys
import traceback

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from registry import CASES  # noqa: E402

_NP = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "BOOL": np.bool_}
_ST = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64",
       np.dtype(np.int64): "I64", np.dtype(np.bool_): "BOOL"}


def parse(blob):
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=_NP[info["dtype"]]).reshape(info["shape"]).copy()
        tensors[name] = torch.from_numpy(arr)
    return meta, tensors


def serialize(tensors, meta=None):
    header = {}
    if meta:
        header["__metadata__"] = meta
    chunks, offset = [], 0
    for name, t in tensors.items():
        if t is None:
            continue
        arr = t.detach().cpu().contiguous().numpy().copy(order="C")
        if arr.dtype == np.int32:
            arr = arr.astype(np.int64)
        raw = arr.tobytes()
        header[name] = {"dtype": _ST[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(chunks)


def read_exact(stream, n):
    buf = b""
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def main():
    torch.set_num_threads(1)
    for fname in sorted(os.listdir(HERE)):
        if fname.startswith("cases_") and fname.endswith(".py"):
            importlib.import_module(fname[:-3])
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = read_exact(stdin, 8)
        if head is None:
            return
        (n,) = struct.unpack("<Q", head)
        blob = read_exact(stdin, n)
        try:
            meta, tensors = parse(blob)
            name = meta["case"]
            cfg = json.loads(meta.get("config", "{}"))
            if name not in CASES:
                raise KeyError("unknown oracle case %r (known: %s)" % (name, sorted(CASES)))
            out = CASES[name](cfg, tensors)
            reply = serialize(out)
        except Exception:  # reported to the C++ side, which fails the test
            reply = serialize({}, {"error": traceback.format_exc()})
        stdout.write(struct.pack("<Q", len(reply)) + reply)
        stdout.flush()


if __name__ == "__main__":
    main()
