"""make_bad.py -- writes the committed checkpoint files of tests/test_convert.sh into this directory.

    /usr/bin/python3 tests/bad_inputs/convert/make_bad.py     # needs torch (Debian python3-torch), numpy

Bad inputs (dit-convert must refuse each with exit status 2, naming the file): pickles referencing
dangerous or unknown globals, a pickled nn.Module, missing / misshapen / extra / int64 tensors, damaged
zips and pickles, safetensors headers that break the reference library's rules. A few good inputs live
here too (prefix ok_): a deflated zip, a train.py dict with an unknown class inside "args", a 1000-class
model (ImageNet names), a "module."-prefixed state dict. The bad ones derive from ok_tiny.pt, a valid DiT with
hidden 8 (convert with --heads 1), so each is a few KB; ok_deflated.pt is tests/fixtures/dit_xs.pt re-zipped.
All numbers are fixed, so reruns are byte-identical (torch zip records carry the file stem).
Files written at test time instead (truncations, LFS pointer, text, HTML) are made by the test script.
"""
import io
import json
import os
import pickle
import struct
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "..", "fixtures")


def out(name):
    return os.path.join(HERE, name)


def xs():
    return torch.load(os.path.join(FIX, "dit_xs.pt"))


class Evil:
    """__reduce__ names os.system: the converter must refuse the global without running it."""

    def __reduce__(self):
        return (os.system, ("echo this must never run",))


class EvalEvil:
    def __reduce__(self):
        return (eval, ("1 + 1",))


class Foo:
    """An unknown class (pickled as __main__.Foo with NEWOBJ + BUILD)."""

    def __init__(self):
        self.x = 1


def save(obj, name):
    torch.save(obj, out(name))


def rezip(src, name, compression):
    """Copies a torch zip with another compression for every entry (deflate: inflated tensor by tensor)."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(out(name), "w", compression) as zo:
        for info in zi.infolist():
            ni = zipfile.ZipInfo(info.filename.replace("dit_xs/", name[:-3] + "/"), date_time=(2024, 1, 1, 0, 0, 0))
            ni.compress_type = compression
            zo.writestr(ni, zi.read(info.filename))


def zip_with_pickle(name, pkl, extra=None):
    """A torch-like zip: <stem>/data.pkl plus the given data entries."""
    stem = name[:-3]
    with zipfile.ZipFile(out(name), "w", zipfile.ZIP_STORED) as z:
        z.writestr(zipfile.ZipInfo(stem + "/data.pkl", date_time=(2024, 1, 1, 0, 0, 0)), pkl)
        for k, v in (extra or {}).items():
            z.writestr(zipfile.ZipInfo(stem + "/data/" + k, date_time=(2024, 1, 1, 0, 0, 0)), v)
        z.writestr(zipfile.ZipInfo(stem + "/version", date_time=(2024, 1, 1, 0, 0, 0)), b"3\n")


def safetensors(name, header, data):
    h = json.dumps(header, separators=(",", ":")).encode()
    with open(out(name), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def tiny_dit(num_classes, hidden=8, depth=1, patch=1, input_size=2, in_ch=4):
    """A valid small DiT state_dict (official names) with fixed values."""
    rng = np.random.default_rng(7)
    D, F, T, out_ch = hidden, 4 * hidden, (input_size // patch) ** 2, 2 * in_ch
    shapes = OrderedDict()
    shapes["pos_embed"] = (1, T, D)
    shapes["x_embedder.proj.weight"] = (D, in_ch, patch, patch)
    shapes["x_embedder.proj.bias"] = (D,)
    shapes["t_embedder.mlp.0.weight"] = (D, 256)
    shapes["t_embedder.mlp.0.bias"] = (D,)
    shapes["t_embedder.mlp.2.weight"] = (D, D)
    shapes["t_embedder.mlp.2.bias"] = (D,)
    shapes["y_embedder.embedding_table.weight"] = (num_classes + 1, D)
    for b in range(depth):
        for k, s in [("attn.qkv.weight", (3 * D, D)), ("attn.qkv.bias", (3 * D,)), ("attn.proj.weight", (D, D)),
                     ("attn.proj.bias", (D,)), ("mlp.fc1.weight", (F, D)), ("mlp.fc1.bias", (F,)),
                     ("mlp.fc2.weight", (D, F)), ("mlp.fc2.bias", (D,)), ("adaLN_modulation.1.weight", (6 * D, D)),
                     ("adaLN_modulation.1.bias", (6 * D,))]:
            shapes["blocks.%d.%s" % (b, k)] = s
    shapes["final_layer.linear.weight"] = (patch * patch * out_ch, D)
    shapes["final_layer.linear.bias"] = (patch * patch * out_ch,)
    shapes["final_layer.adaLN_modulation.1.weight"] = (2 * D, D)
    shapes["final_layer.adaLN_modulation.1.bias"] = (2 * D,)
    return OrderedDict((k, torch.from_numpy(rng.standard_normal(s).astype(np.float32))) for k, s in shapes.items())


def main():
    torch.manual_seed(0)
    sd = tiny_dit(10)
    save(sd, "ok_tiny.pt")

    # ---- dangerous / unknown globals
    bad = OrderedDict(sd)
    bad["blocks.0.attn.proj.bias"] = Evil()
    save(bad, "global_os_system.pt")
    bad = OrderedDict(sd)
    bad["evil"] = EvalEvil()
    save(bad, "global_builtins_eval.pt")
    bad = OrderedDict(sd)
    bad["blocks.0.attn.proj.bias"] = Foo()
    save(bad, "global_unknown_in_weights.pt")
    save(torch.nn.Linear(2, 3), "pickled_module.pt")
    # unknown class outside the weights (train.py "args"): accepted, kept opaque
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))], lr=1e-4)
    save({"model": sd, "ema": sd, "opt": opt.state_dict(), "args": Foo()}, "ok_train_unknown_args.pt")

    # ---- state_dict content
    bad = OrderedDict(sd)
    del bad["blocks.0.mlp.fc2.bias"]
    save(bad, "missing_tensor.pt")
    bad = OrderedDict(sd)
    bad["blocks.0.attn.proj.weight"] = torch.zeros(8, 7)
    save(bad, "misshapen_tensor.pt")
    bad = OrderedDict(sd)
    bad["extra.weight"] = torch.zeros(4)
    save(bad, "extra_tensor.pt")
    bad = OrderedDict(sd)
    bad["blocks.0.attn.proj.weight"] = torch.zeros(8, 8, dtype=torch.int64)
    save(bad, "int64_weight.pt")
    save(OrderedDict(("module." + k, v) for k, v in sd.items()), "ok_module_prefix.pt")
    bad = OrderedDict(sd)
    bad["blocks.0.attn.proj.bias"] = torch.zeros(1).expand(8)   # stride 0: 8 elements from a 1-element storage
    save(bad, "expanded_view.pt")

    # ---- containers
    rezip(os.path.join(FIX, "dit_xs.pt"), "ok_deflated.pt", zipfile.ZIP_DEFLATED)
    # data.pkl that is a protocol-1 pickle, one with an EXT1 opcode, one whose storage entry is missing,
    # one whose tensor view runs past its storage, one with a huge memo index
    zip_with_pickle("pickle_protocol1.pt", pickle.dumps({"a": 1}, protocol=1))
    zip_with_pickle("pickle_ext1.pt", b"\x80\x02\x82\x01.")
    sd_small = OrderedDict([("w", torch.arange(6, dtype=torch.float32).reshape(2, 3))])
    buf = io.BytesIO()
    torch.save(sd_small, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        pkl = z.read([n for n in z.namelist() if n.endswith("data.pkl")][0])
    zip_with_pickle("missing_storage_entry.pt", pkl)                          # no data/0 entry
    zip_with_pickle("storage_too_small.pt", pkl, {"0": b"\0" * 8})             # 6 floats need 24 bytes
    zip_with_pickle("memo_index_huge.pt", b"\x80\x02}r\xff\xff\xff\x7f.")       # LONG_BINPUT 2^31-1
    zip_with_pickle("memo_index_sparse.pt", b"\x80\x02}r\x00\x00\x10\x00.")  # LONG_BINPUT 2^20 as the first PUT
    zip_with_pickle("pickle_empty_tuple.pt", b"\x80\x02(t.")                    # MARK TUPLE on an empty stack
    # a global whose name holds control bytes (the error message must stay one printable line)
    zip_with_pickle("global_control_chars.pt", b"\x80\x02cbuiltins\nev\x1b[2Jal\x01\n)R.")
    # legacy stream whose first string claims 50 MB: refused before allocating
    with open(out("legacy_huge_string.pt"), "wb") as f:
        f.write(b"\x80\x02\x8a\x0a" + bytes([0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]) + b"."
                + b"\x80\x02X" + struct.pack("<I", 50_000_000) + b"abc")

    # ---- safetensors headers (reference library rules)
    w = np.arange(4, dtype=np.float32).tobytes()
    safetensors("st_gap.safetensors", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                       "b": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}}, w)
    safetensors("st_overlap.safetensors", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                           "b": {"dtype": "F32", "shape": [3], "data_offsets": [4, 16]}}, w)
    safetensors("st_wrong_size.safetensors", {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, w)
    safetensors("st_trailing_bytes.safetensors", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, w)
    safetensors("st_bad_json.safetensors", {"a": 1}, b"")
    with open(out("st_bad_json.safetensors"), "r+b") as f:   # break the JSON: a bare control character
        f.seek(9)
        f.write(b"\x01")
    with open(out("st_header_too_large.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", 200_000_000) + b"{" + b" " * 55)
    safetensors("st_dup_key.safetensors", {}, b"")
    with open(out("st_dup_key.safetensors"), "wb") as f:
        h = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
        f.write(struct.pack("<Q", len(h)) + h + w[:8])

    # ---- a valid 1000-class DiT (ImageNet names are added), written as safetensors by this script
    t = tiny_dit(1000)
    header, data, off = {}, b"", 0
    for k, v in t.items():
        b = v.numpy().tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        data += b
        off += len(b)
    safetensors("ok_1000_classes.safetensors", header, data)
    print("wrote", len([f for f in os.listdir(HERE) if not f.endswith(".py")]), "files into", HERE)


if __name__ == "__main__":
    sys.exit(main())
