#!/usr/bin/env python3
"""Writes the hand-made seed inputs of tests/corpus/{gguf,npy}/seed-* (run once; the outputs are
committed, so CI needs no Python). Fixtures from tests/fixtures/ are copied in by tests/fuzz/run.sh."""
import os, struct, sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")

def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b

FMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q", 11: "q", 12: "d"}

def kv(key, t, v, at=None):
    out = gstr(key) + struct.pack("<I", t)
    if t == 9:
        out += struct.pack("<IQ", at, len(v))
        for e in v:
            out += gstr(e) if at == 8 else struct.pack("<" + FMT[at], e)
    elif t == 8:
        out += gstr(v)
    else:
        out += struct.pack("<" + FMT[t], v)
    return out

BLK = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34)}

def gguf(kvs, tensors, align=32, version=3):
    """tensors: list of (name, type, ne list); data bytes are a counter pattern."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs)
    infos, blobs, off = b"", b"", 0
    for name, t, ne in tensors:
        blck, nb = BLK[t]
        n = ne[0] // blck * nb
        for d in ne[1:]:
            n *= d
        infos += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        infos += struct.pack("<IQ", t, off)
        blob = bytes((i * 7 + 3) & 0xFF for i in range(n))
        if t in (2, 3, 6, 7, 8):   # keep the block scales finite: d = 0x3c00 (1.0)
            blob = bytearray(blob)
            for b in range(0, n, nb):
                blob[b:b + 2] = b"\x00\x3c"
            blob = bytes(blob)
        pad = (-len(blob)) % align
        blobs += blob + b"\0" * pad
        off += len(blob) + pad
    h = head + infos
    h += b"\0" * ((-len(h)) % align)
    return h + blobs

def write(sub, name, data):
    os.makedirs(os.path.join(root, sub), exist_ok=True)
    with open(os.path.join(root, sub, name), "wb") as f:
        f.write(data)

# ---- GGUF
all_kvs = [
    kv("general.architecture", 8, "dit"), kv("general.name", 8, "seed"),
    kv("t.u8", 0, 200), kv("t.i8", 1, -3), kv("t.u16", 2, 65535), kv("t.i16", 3, -300),
    kv("t.u32", 4, 7), kv("t.i32", 5, -7), kv("t.f32", 6, 0.5), kv("t.bool", 7, 1),
    kv("t.u64", 10, 1 << 40), kv("t.i64", 11, -(1 << 40)), kv("t.f64", 12, 2.5),
    kv("t.arr_str", 9, ["tench", "", "goldfish"], 8), kv("t.arr_u32", 9, [1, 2, 3], 4),
    kv("t.arr_f32", 9, [1.0, -2.0], 6), kv("t.arr_i64", 9, [-1], 11), kv("t.arr_bool", 9, [0, 1], 7),
    kv("t.arr_empty", 9, [], 4),
]
write("gguf", "seed-all-kv-types.gguf", gguf(all_kvs, [("a", 0, [3, 2]), ("b", 1, [5])]))
write("gguf", "seed-every-type.gguf", gguf([kv("general.architecture", 8, "dit")],
      [("f32", 0, [4]), ("f16", 1, [4, 2]), ("bf16", 30, [2, 1, 3]), ("q4_0", 2, [32, 2]),
       ("q4_1", 3, [32]), ("q5_0", 6, [64]), ("q5_1", 7, [32, 1, 1, 2]), ("q8_0", 8, [32, 3])]))
write("gguf", "seed-align64.gguf", gguf([kv("general.alignment", 4, 64)], [("x", 0, [3]), ("y", 0, [17])], align=64))
write("gguf", "seed-empty.gguf", gguf([], []))
write("gguf", "seed-v2-no-tensors.gguf", gguf([kv("k", 8, "v")], [], version=2))
write("gguf", "seed-zero-dim.gguf", gguf([], [("z", 0, [0, 5]), ("w", 1, [2])]))
dit_cfg = [kv("general.architecture", 8, "dit"), kv("dit.depth", 4, 1), kv("dit.hidden_size", 4, 32),
           kv("dit.num_heads", 4, 2), kv("dit.patch_size", 4, 2), kv("dit.input_size", 4, 4),
           kv("dit.in_channels", 4, 4), kv("dit.learn_sigma", 7, 1), kv("dit.num_classes", 4, 4),
           kv("dit.class_names", 9, ["a", "b", "c", "d"], 8), kv("vae.scaling_factor", 6, 0.18215),
           kv("vae.block_out_channels", 9, [32, 64], 4)]
write("gguf", "seed-dit-keys.gguf", gguf(dit_cfg, [("pos_embed", 0, [32, 4, 1]), ("y_embedder.embedding_table.weight", 1, [32, 5])]))

# ---- .npy
def npy(descr, shape, payload, fortran=False, version=1):
    sh = "(" + "".join(f"{d}, " for d in shape)[:-2] + ("," if len(shape) == 1 else "") + ")"
    h = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, "True" if fortran else "False", sh)
    pre = 10 if version == 1 else 12
    h += " " * ((-(pre + len(h) + 1)) % 64) + "\n"
    hl = struct.pack("<H", len(h)) if version == 1 else struct.pack("<I", len(h))
    return b"\x93NUMPY" + bytes([version, 0]) + hl + h.encode() + payload

write("npy", "seed-f4-2x3.npy", npy("<f4", [2, 3], struct.pack("<6f", 1, 2, 3, -4, 5.5, 6)))
write("npy", "seed-f8-3.npy", npy("<f8", [3], struct.pack("<3d", 0.1, -1e300, 7)))
write("npy", "seed-f4-scalar.npy", npy("<f4", [], struct.pack("<f", 3.25)))
write("npy", "seed-f4-empty.npy", npy("<f4", [0, 4], b""))
write("npy", "seed-v2.npy", npy("<f4", [1, 1, 2], struct.pack("<2f", 1, 2), version=2))
write("npy", "seed-i8-wrong-dtype.npy", npy("<i8", [2], struct.pack("<2q", 1, 2)))
write("npy", "seed-fortran.npy", npy("<f4", [2, 2], struct.pack("<4f", 1, 2, 3, 4), fortran=True))
write("npy", "seed-big-endian.npy", npy(">f4", [2], struct.pack(">2f", 1, 2)))

# ---- tiny DiT models (tests/corpus/model): every tensor dit_model_load binds, small enough to fuzz
def dit_model(D=8, heads=1, p=1, L=2, C=1, sigma=True, ncls=2, depth=1, wtype=0, vae=None, names=False):
    out = C * (2 if sigma else 1)
    g = L // p
    kvs = [kv("general.architecture", 8, "dit"), kv("general.name", 8, "tiny"),
           kv("dit.depth", 4, depth), kv("dit.hidden_size", 4, D), kv("dit.num_heads", 4, heads),
           kv("dit.patch_size", 4, p), kv("dit.input_size", 4, L), kv("dit.in_channels", 4, C),
           kv("dit.learn_sigma", 7, 1 if sigma else 0), kv("dit.num_classes", 4, ncls)]
    if names:
        kvs.append(kv("dit.class_names", 9, ["tench, Tinca tinca", "goldfish"][:ncls] + [f"c{i}" for i in range(2, ncls)], 8))
    T = []
    def lin(pre, o, i, t=wtype):
        T.append((pre + ".weight", t if i % BLK[t][0] == 0 else 0, [i, o]))
        T.append((pre + ".bias", 0, [o]))
    T.append(("pos_embed", 0, [D, g * g, 1]))
    T.append(("x_embedder.proj.weight", 0, [p, p, C, D]))
    T.append(("x_embedder.proj.bias", 0, [D]))
    lin("t_embedder.mlp.0", D, 256)
    lin("t_embedder.mlp.2", D, D)
    T.append(("y_embedder.embedding_table.weight", 0, [D, ncls + 1]))
    for l in range(depth):
        lin(f"blocks.{l}.attn.qkv", 3 * D, D)
        lin(f"blocks.{l}.attn.proj", D, D)
        lin(f"blocks.{l}.mlp.fc1", 4 * D, D)
        lin(f"blocks.{l}.mlp.fc2", D, 4 * D)
        lin(f"blocks.{l}.adaLN_modulation.1", 6 * D, D)
    lin("final_layer.adaLN_modulation.1", 2 * D, D)
    lin("final_layer.linear", p * p * out, D)
    if vae:
        ch, grp = vae
        kvs += [kv("vae.block_out_channels", 9, [ch], 4), kv("vae.layers_per_block", 4, 0),
                kv("vae.norm_num_groups", 4, grp), kv("vae.latent_channels", 4, C), kv("vae.out_channels", 4, 1),
                kv("vae.scaling_factor", 6, 0.5)]
        def conv(pre, o, i, k):
            T.append((pre + ".weight", 0, [k, k, i, o])); T.append((pre + ".bias", 0, [o]))
        def norm(pre, c):
            T.append((pre + ".weight", 0, [c])); T.append((pre + ".bias", 0, [c]))
        def resnet(pre, i, o):
            norm(pre + ".norm1", i); conv(pre + ".conv1", o, i, 3); norm(pre + ".norm2", o); conv(pre + ".conv2", o, o, 3)
            if i != o: conv(pre + ".conv_shortcut", o, i, 1)
        conv("vae.post_quant_conv", C, C, 1)
        conv("vae.decoder.conv_in", ch, C, 3)
        resnet("vae.decoder.mid_block.resnets.0", ch, ch)
        resnet("vae.decoder.mid_block.resnets.1", ch, ch)
        norm("vae.decoder.mid_block.attentions.0.group_norm", ch)
        for n in ("to_q", "to_k", "to_v", "to_out.0"):
            lin("vae.decoder.mid_block.attentions.0." + n, ch, ch, 0)
        resnet("vae.decoder.up_blocks.0.resnets.0", ch, ch)
        norm("vae.decoder.conv_norm_out", ch)
        conv("vae.decoder.conv_out", 1, ch, 3)
    return gguf(kvs, T)

write("model", "seed-tiny.gguf", dit_model())
write("model", "seed-tiny-names.gguf", dit_model(D=8, heads=2, p=2, L=4, C=2, sigma=False, ncls=3, names=True))
write("model", "seed-tiny-q8.gguf", dit_model(D=32, wtype=8))
write("model", "seed-tiny-f16-depth2.gguf", dit_model(D=8, depth=2, wtype=1))
write("model", "seed-tiny-vae.gguf", dit_model(vae=(2, 1)))
