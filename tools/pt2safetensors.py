#!/usr/bin/env python3
"""Convert a PyTorch state_dict (.pt/.pth/.bin) to safetensors and back.

    tools/pt2safetensors.py model.pt model.safetensors        # PyTorch -> rnnkit
    tools/pt2safetensors.py model.safetensors model.pt        # rnnkit -> PyTorch
    tools/pt2safetensors.py ckpt.pt model.safetensors --key model_state_dict
    tools/pt2safetensors.py run.safetensors model.pt --key model   # a training checkpoint's model

The direction follows the input's extension: a .safetensors input is read,
anything else is torch.load'ed. The output is written atomically. Needs only
torch and numpy (not the safetensors package); the files it writes carry
rnnkit's content checksum (metadata "rnnkit.crc32", see docs/CHECKPOINTS.md)
unless --no-checksum, and files it reads are verified when they carry one.

Importable too: read_safetensors, write_safetensors, content_digest.
"""
import argparse
import collections
import json
import os
import struct
import sys
import tempfile
import zlib

import numpy as np
import torch

CHECKSUM_KEY = "rnnkit.crc32"
MAX_HEADER_BYTES = 100_000_000

# safetensors dtype <-> torch dtype, and the numpy dtype that carries its bytes.
_DTYPES = [
    ("F64", torch.float64, np.float64),
    ("F32", torch.float32, np.float32),
    ("F16", torch.float16, np.float16),
    ("BF16", torch.bfloat16, np.int16),  # numpy has no bfloat16: move the bits as int16
    ("I64", torch.int64, np.int64),
    ("I32", torch.int32, np.int32),
    ("I16", torch.int16, np.int16),
    ("I8", torch.int8, np.int8),
    ("U8", torch.uint8, np.uint8),
    ("BOOL", torch.bool, np.bool_),
]
_TO_ST = {t: s for s, t, _ in _DTYPES}
_FROM_ST = {s: (t, n) for s, t, n in _DTYPES}


class FormatError(Exception):
    pass


def tensor_bytes(t):
    """The little-endian C-order bytes of a CPU tensor."""
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def content_digest(metadata, entries):
    """rnnkit's content checksum. entries: (name, dtype, shape, crc32 of the bytes)."""
    crc = 0

    def feed(b):
        nonlocal crc
        crc = zlib.crc32(b, crc)

    def feed_str(s):
        b = s.encode("utf-8")
        feed(struct.pack("<Q", len(b)) + b)

    for key in sorted(metadata, key=lambda k: k.encode("utf-8")):
        if key == CHECKSUM_KEY:
            continue
        feed(b"M")
        feed_str(key)
        feed_str(metadata[key])
    for name, dtype, shape, data_crc in sorted(entries, key=lambda e: e[0].encode("utf-8")):
        feed(b"T")
        feed_str(name)
        feed_str(dtype)
        feed(struct.pack("<Q", len(shape)))
        for d in shape:
            feed(struct.pack("<Q", d))
        feed(struct.pack("<I", data_crc))
    return crc


def _write_atomic(path, chunks):
    """Temporary file in the same folder, fsync, rename, fsync of the folder."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_safetensors(path, tensors, metadata=None, checksum=True):
    """tensors: name -> torch.Tensor, in the order the header lists them."""
    metadata = dict(metadata or {})
    if CHECKSUM_KEY in metadata:
        del metadata[CHECKSUM_KEY]
    items = []
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise FormatError("%r is a %s, not a tensor" % (name, type(t).__name__))
        if t.dtype not in _TO_ST:
            raise FormatError("%r has dtype %s, which safetensors cannot hold here" % (name, t.dtype))
        items.append((name, _TO_ST[t.dtype], list(t.shape), tensor_bytes(t), t.element_size()))
    # Data grouped by element size, largest first, so every tensor is aligned.
    order = sorted(range(len(items)), key=lambda i: -items[i][4])
    offsets, pos = {}, 0
    for i in order:
        offsets[i] = (pos, pos + len(items[i][3]))
        pos += len(items[i][3])
    if checksum:
        entries = [(n, d, s, zlib.crc32(b)) for n, d, s, b, _ in items]
        metadata[CHECKSUM_KEY] = "%08x" % content_digest(metadata, entries)
    header = {}
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    for i, (name, dtype, shape, _, _) in enumerate(items):
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": list(offsets[i])}
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    h += b" " * (-len(h) % 8)
    _write_atomic(path, [struct.pack("<Q", len(h)), h] + [items[i][3] for i in order])


def read_safetensors(path):
    """Returns (OrderedDict name -> torch.Tensor in header order, metadata).
    Validates the layout and, when present, rnnkit's checksum."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise FormatError("%s: truncated (%d bytes)" % (path, len(blob)))
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER_BYTES or n > len(blob) - 8 or n < 2 or blob[8:9] != b"{":
        raise FormatError("%s: not a safetensors file (header length %d, file %d bytes)" % (path, n, len(blob)))
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"), object_pairs_hook=collections.OrderedDict)
    except ValueError as e:
        raise FormatError("%s: header is not valid JSON: %s" % (path, e))
    data = memoryview(blob)[8 + n:]
    metadata = dict(header.pop("__metadata__", None) or {})
    tensors, entries, spans = collections.OrderedDict(), [], []
    for name, info in header.items():
        dtype, shape, (b, e) = info["dtype"], list(info["shape"]), info["data_offsets"]
        if dtype not in _FROM_ST:
            raise FormatError("%s: tensor %r has dtype %s, which this tool does not handle" % (path, name, dtype))
        torch_dtype, np_dtype = _FROM_ST[dtype]
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not (0 <= b <= e <= len(data)) or e - b != count * np.dtype(np_dtype).itemsize:
            raise FormatError("%s: tensor %r: data_offsets [%d, %d] do not fit" % (path, name, b, e))
        raw = bytes(data[b:e])
        arr = np.frombuffer(raw, dtype=np_dtype).reshape(shape).copy()
        t = torch.from_numpy(arr)
        if torch_dtype == torch.bfloat16:
            t = t.view(torch.bfloat16)
        tensors[name] = t
        entries.append((name, dtype, shape, zlib.crc32(raw)))
        spans.append((b, e, name))
    cursor = 0
    for b, e, name in sorted(spans):
        if b != cursor:
            raise FormatError("%s: tensor %r overlaps or leaves a gap (offset %d, expected %d)" % (path, name, b, cursor))
        cursor = e
    if cursor != len(data):
        raise FormatError("%s: %d trailing bytes after the tensors" % (path, len(data) - cursor))
    if CHECKSUM_KEY in metadata:
        computed = "%08x" % content_digest(metadata, entries)
        if computed != metadata[CHECKSUM_KEY]:
            raise FormatError("%s: checksum mismatch (stored %s, computed %s): the file is corrupted"
                              % (path, metadata[CHECKSUM_KEY], computed))
        del metadata[CHECKSUM_KEY]
    return tensors, metadata


def _flatten(obj, prefix, out, non_tensors):
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, "%s.%s" % (prefix, k) if prefix else str(k), out, non_tensors)
    else:
        non_tensors.append(prefix or "<top level>")


def load_state_dict_file(path, key=None, unsafe_load=False):
    """A flat OrderedDict of tensors from a .pt/.pth/.bin file (nested dicts
    are joined with '.'); `key` picks one entry of a checkpoint dict."""
    kwargs = {"map_location": "cpu"}
    if not unsafe_load:
        kwargs["weights_only"] = True
    try:
        obj = torch.load(path, **kwargs)
    except OSError:
        raise
    except Exception as e:  # weights_only refuses arbitrary pickles
        if unsafe_load:
            raise
        raise FormatError("%s: torch.load(weights_only=True) failed (%s); if the file is trusted and holds more "
                          "than tensors, pass --unsafe-load" % (path, e))
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            keys = sorted(map(str, obj)) if isinstance(obj, dict) else []
            raise FormatError("%s: no entry %r (entries: %s)" % (path, key, ", ".join(keys)))
        obj = obj[key]
    out, non_tensors = collections.OrderedDict(), []
    _flatten(obj, "", out, non_tensors)
    if non_tensors:
        raise FormatError("%s: entries that are not tensors: %s; pick the state_dict with --key"
                          % (path, ", ".join(non_tensors[:10])))
    return out


def main(argv=None):
    summary, _, details = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(description=summary, epilog=details,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--key", help="the entry of a checkpoint dict to convert (a .safetensors input: the "
                                 "key prefix, e.g. 'model' for a training checkpoint's model.*)")
    p.add_argument("--float32", action="store_true", help="convert float16/bfloat16/float64 tensors to float32")
    p.add_argument("--no-checksum", action="store_true", help="write no rnnkit.crc32 metadata")
    p.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                   help="add a metadata string to a .safetensors output (repeatable)")
    p.add_argument("--unsafe-load", action="store_true",
                   help="torch.load without weights_only (runs the pickle: trusted files only)")
    args = p.parse_args(argv)
    try:
        metadata = {}
        if args.input.endswith(".safetensors"):
            tensors, metadata = read_safetensors(args.input)
            if args.key is not None:
                prefix = args.key + "."
                tensors = collections.OrderedDict(
                    (k[len(prefix):], v) for k, v in tensors.items() if k.startswith(prefix))
                if not tensors:
                    raise FormatError("%s: no tensor starts with %r" % (args.input, prefix))
        else:
            tensors = load_state_dict_file(args.input, args.key, args.unsafe_load)
        if args.float32:
            tensors = collections.OrderedDict(
                (k, v.float() if v.is_floating_point() else v) for k, v in tensors.items())
        for kv in args.metadata:
            k, sep, v = kv.partition("=")
            if not sep:
                raise FormatError("--metadata expects KEY=VALUE, got %r" % kv)
            metadata[k] = v
        if args.output.endswith(".safetensors"):
            write_safetensors(args.output, tensors, metadata, checksum=not args.no_checksum)
        else:
            # torch.save into a temporary file first, so the output is never half-written.
            folder = os.path.dirname(os.path.abspath(args.output))
            fd, tmp = tempfile.mkstemp(prefix=os.path.basename(args.output) + ".tmp.", dir=folder)
            os.close(fd)
            try:
                torch.save(tensors, tmp)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, args.output)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
    except (FormatError, OSError, KeyError, ValueError, TypeError) as e:
        print("pt2safetensors: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
