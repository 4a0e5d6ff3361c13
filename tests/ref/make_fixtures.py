"""make_fixtures.py -- writes the committed test fixtures of dit.c into tests/fixtures/.

    /usr/bin/python3 tests/ref/make_fixtures.py            # writes tests/fixtures/ (deterministic)
    /usr/bin/python3 tests/ref/make_fixtures.py --drift    # also prints float32-vs-float64 drift of every output

All random numbers come from numpy's PCG64 (np.random.default_rng) with fixed seeds, so the files do not depend
on the torch version. Weights are random (not the adaLN-Zero init), sized so that activations stay O(1).
Reference outputs are computed in float64 from the stored weight values (fp32 or fp16 upcast), saved as float32.
"""
import argparse
import json
import os
import struct
import sys
from collections import OrderedDict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dit_ref as R  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")

# ---- configs ------------------------------------------------------------------------------------------
CFG_S = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=144, depth=2, num_heads=2,
             num_classes=10, learn_sigma=True, class_dropout_prob=0.1)
CFG_XS = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=72, depth=1, num_heads=1,
              num_classes=10, learn_sigma=True, class_dropout_prob=0.1)
CFG_PX = dict(input_size=8, patch_size=2, in_channels=1, hidden_size=64, depth=1, num_heads=1,
              num_classes=10, learn_sigma=True, class_dropout_prob=0.1)
VAE_BLOCKS = [32, 32, 32, 64]
SCALE = 0.18215


# ---- writers ------------------------------------------------------------------------------------------


WRITTEN = set()  # every file this script wrote (tests/fixtures/ is shared with other generators)


def path(name):
    p = os.path.join(OUT, name)
    WRITTEN.add(p)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    return p


def save_npy(name, a, dtype=np.float32):
    """Little-endian C-order .npy (format 1.0, numpy's own writer)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    np.save(path(name), np.ascontiguousarray(np.asarray(a, dtype=dtype)))


_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}


def save_safetensors(name, tensors, metadata=None):
    """safetensors: u64 LE header length N, N bytes of JSON (padded with spaces to a multiple of 8),
    then the tensor bytes, contiguous, in the order of the dict; data_offsets relative to byte 8+N."""
    header, blobs, off = OrderedDict(), [], 0
    if metadata:
        header["__metadata__"] = metadata
    for k, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:  # numpy has no bf16: take the raw 16-bit patterns
            raw = t.view(torch.int16).numpy().tobytes()
        else:
            raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        header[k] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path(name), "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def save_legacy_deterministic(obj, name):
    """torch.save(obj, _use_new_zipfile_serialization=False), made reproducible.
    Legacy layout: 5 pickles (magic, protocol, sys_info, object, sorted storage-key list) then, for each key in
    sorted order, int64 numel + raw storage bytes. Keys are memory addresses (str(storage._cdata)), so the
    bytes change from run to run: rename them to zero-padded counters in order of first use in the object
    pickle (same width) and rewrite the key list and the storages in the new sorted order. Contents unchanged.
    Only float32 storages are handled (4 bytes per element)."""
    import io
    import pickle

    class _Skip(pickle.Unpickler):  # walks a pickle without building torch objects
        def persistent_load(self, pid):
            return None

        def find_class(self, module, name):
            class _Any(dict):
                def __init__(self, *a, **k):
                    pass

                def __setstate__(self, state):
                    pass
            return _Any

    assert all(v.dtype == torch.float32 for v in obj.values())
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue()
    buf.seek(0)
    for _ in range(3):  # magic, protocol, sys_info
        _Skip(buf).load()
    p0 = buf.tell()
    _Skip(buf).load()
    p1 = buf.tell()
    keys = pickle.load(buf)
    p2 = buf.tell()
    width = len(keys[0])
    assert all(len(k) == width and k.isdigit() for k in keys)
    obj_pkl = raw[p0:p1]
    first_use = sorted(keys, key=lambda k: obj_pkl.find(k.encode()))
    rename = {k: "%0*d" % (width, i) for i, k in enumerate(first_use)}
    blobs, pos = {}, p2
    for k in keys:  # storages follow in sorted old-key order
        numel = struct.unpack("<q", raw[pos:pos + 8])[0]
        blobs[k] = raw[pos:pos + 8 + 4 * numel]
        pos += 8 + 4 * numel
    assert pos == len(raw)
    for k in keys:
        obj_pkl = obj_pkl.replace(k.encode(), rename[k].encode())
    new_keys = sorted(rename.values())
    back_map = {v: k for k, v in rename.items()}
    out = raw[:p0] + obj_pkl + pickle.dumps(new_keys, protocol=2) + b"".join(blobs[back_map[k]] for k in new_keys)
    with open(path(name), "wb") as f:
        f.write(out)
    back = torch.load(path(name), map_location="cpu")
    assert list(back) == list(obj) and all(torch.equal(back[k], obj[k]) for k in obj)


# ---- random weights -----------------------------------------------------------------------------------


def randomize_dit(model, rng, pos_noise=0.01):
    """Random weights with O(1) activations: Linear/conv weights N(0, gain/fan_in), biases N(0, 0.05^2),
    label table N(0, 0.5^2) (so labels, hence CFG, matter), adaLN Linears gain 0.6 with bias N(0, 0.1^2)
    (shift/scale/gate ~0.3-0.5, every sub-layer contributes), pos_embed = sincos + N(0, pos_noise^2)."""
    sd = model.state_dict()
    new = OrderedDict()
    for k, v in sd.items():
        shape = tuple(v.shape)
        if k == "pos_embed":
            g = model.input_size // model.patch_size
            a = R.get_2d_sincos_pos_embed(model.hidden_size, g)[None] + pos_noise * rng.standard_normal(shape)
        elif k == "y_embedder.embedding_table.weight":
            a = 0.5 * rng.standard_normal(shape)
        elif k.endswith(".bias"):
            a = (0.1 if "adaLN" in k else 0.05) * rng.standard_normal(shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            gain = 0.6 if "adaLN" in k else 1.0
            a = gain / np.sqrt(fan_in) * rng.standard_normal(shape)
        new[k] = torch.from_numpy(a).float()
    model.load_state_dict(new)
    return new


def randomize_vae(vae, rng):
    """Random VAE weights, rounded to float16: convs/linears N(0, 1/fan_in), biases N(0, 0.05^2),
    GroupNorm weight 1 + N(0, 0.1^2), bias N(0, 0.1^2). Returns the fp16 state_dict; the module gets the fp16
    values upcast."""
    sd16 = OrderedDict()
    for k, v in vae.state_dict().items():
        shape = tuple(v.shape)
        is_norm = ("norm" in k) and len(shape) == 1
        if is_norm and k.endswith(".weight"):
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif is_norm:
            a = 0.1 * rng.standard_normal(shape)
        elif k.endswith(".bias"):
            a = 0.05 * rng.standard_normal(shape)
        else:
            a = rng.standard_normal(shape) / np.sqrt(int(np.prod(shape[1:])))
        sd16[k] = torch.from_numpy(a).half()
    vae.load_state_dict(OrderedDict((k, t.float()) for k, t in sd16.items()))
    return sd16


def vae_extra_tensors(rng):
    """A few encoder/quant_conv tensors like real files have; a decoder loader must ignore them."""
    return OrderedDict([
        ("encoder.conv_in.weight", torch.from_numpy(0.1 * rng.standard_normal((32, 3, 3, 3))).half()),
        ("encoder.conv_in.bias", torch.from_numpy(0.1 * rng.standard_normal((32,))).half()),
        ("quant_conv.weight", torch.from_numpy(0.1 * rng.standard_normal((8, 8, 1, 1))).half()),
        ("quant_conv.bias", torch.from_numpy(0.1 * rng.standard_normal((8,))).half()),
    ])


def vae_to_legacy(sd):
    """diffusers >= 0.17 mid-attention names -> the older AttentionBlock names of the hub files (§5.5)."""
    ren = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    out = OrderedDict()
    for k, v in sd.items():
        for a, b in ren.items():
            if ".attentions.0.%s." % a in k:
                k = k.replace(".attentions.0.%s." % a, ".attentions.0.%s." % b)
        out[k] = v
    return out


def vae_to_ldm(sd, n_up=4):
    """diffusers names -> original LDM names (§5.5): up_blocks.i <-> up.{3-i} (reversed), resnets -> block,
    upsamplers.0 -> upsample, mid_block.resnets.{0,1} -> mid.block_{1,2}, attentions.0.* -> mid.attn_1.*
    with q/k/v/proj_out as 1x1 conv weights [C, C, 1, 1], conv_shortcut -> nin_shortcut, conv_norm_out -> norm_out."""
    out = OrderedDict()
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    for k, v in sd.items():
        nk = k
        if k.startswith("decoder.up_blocks."):
            parts = k.split(".")
            i = int(parts[2])
            rest = ".".join(parts[3:])
            rest = rest.replace("resnets.", "block.").replace("upsamplers.0.", "upsample.").replace("conv_shortcut", "nin_shortcut")
            nk = "decoder.up.%d.%s" % (n_up - 1 - i, rest)
        elif k.startswith("decoder.mid_block.resnets."):
            j = int(k.split(".")[3])
            nk = "decoder.mid.block_%d.%s" % (j + 1, ".".join(k.split(".")[4:]))
        elif k.startswith("decoder.mid_block.attentions.0."):
            rest = k[len("decoder.mid_block.attentions.0."):]
            for a, b in attn.items():
                if rest.startswith(a + "."):
                    nk = "decoder.mid.attn_1.%s.%s" % (b, rest[len(a) + 1:])
                    if a != "group_norm" and rest.endswith(".weight"):
                        v = v.reshape(v.shape[0], v.shape[1], 1, 1)  # Linear -> 1x1 conv weight
                    break
        elif k.startswith("decoder.conv_norm_out."):
            nk = k.replace("decoder.conv_norm_out.", "decoder.norm_out.")
        out[nk] = v
    return out


# ---- reference runs -----------------------------------------------------------------------------------


def t64(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


class Runner:
    """Runs every reference computation in a given dtype (float64 = the fixtures, float32 = drift estimate)."""

    def __init__(self, dtype, models, data):
        self.dtype = dtype
        self.m = {k: self._cast(v) for k, v in models.items()}
        self.d = data

    def _cast(self, mod):
        import copy
        mod = copy.deepcopy(mod).eval()
        return mod.double() if self.dtype == torch.float64 else mod.float()

    def x(self, name):
        return torch.from_numpy(np.asarray(self.d[name], dtype=np.float64)).to(self.dtype)

    def run(self):
        d, m, res = self.d, self.m, OrderedDict()
        L = lambda a: torch.as_tensor(a, dtype=torch.long)  # noqa: E731
        with torch.no_grad():
            out, inter = m["s"](self.x("fwd_x"), L(d["fwd_t"]), L(d["fwd_y"]), return_intermediates=True)
            res["fwd_out"], res["fwd_temb"], res["fwd_c"], res["fwd_block0"] = out, inter["temb"], inter["c"], inter["block0"]
            xx = torch.cat([self.x("fwd_x"), self.x("fwd_x")])
            res["cfg_out"] = m["s"].forward_with_cfg(xx, L(d["cfg_t"]), L(d["cfg_y"]), 4.0, 3)
            for key in ("xs", "xs_f16", "xs_bf16"):
                res[key + "_fwd_out"] = m[key](self.x("fwd_x"), L(d["fwd_t"]), L(d["fwd_y"]))
            res["px_fwd_out"] = m["px"](self.x("px_fwd_x"), L(d["fwd_t"]), L(d["fwd_y"]))

            s10, s250 = R.make_schedule("10"), R.make_schedule("250")
            lab = L(d["e2e_labels"])
            x0 = self.x("e2e_init")
            # DDIM on spacing "ddim10" (t = 0, 100, ..., 900), what `dit-sample --sampler ddim --steps 10` uses
            sd10 = R.make_schedule("ddim10")
            res["ddim10_out"] = R.ddim_loop(m["s"], sd10, x0, lab, 4.0, eta=0.0)
            res["ddim10_eta1_out"] = R.ddim_loop(m["s"], sd10, x0, lab, 4.0, eta=1.0, step_noise=self.x("e2e_step_noise10"))
            # DPM-Solver++(2M) on spacing "linspace10" (t = round(99.9 i), i = 1..10: 100, ..., 500, 599, ..., 999;
            # diffusers' linspace), what `dit-sample --sampler dpm++2m --steps 10` uses; and on "10"
            # (t = 0, 111, ..., 999: the last model call at t = 0)
            res["dpmpp2m10_out"] = R.dpmpp_2m_loop(m["s"], R.make_schedule("linspace10"), x0, lab, 4.0)
            res["dpmpp2m_s10_out"] = R.dpmpp_2m_loop(m["s"], R.make_schedule("10"), x0, lab, 4.0)
            res["ddpm10_out"] = R.p_sample_loop_ddpm(m["s"], s10, x0, lab, 4.0, step_noise=self.x("e2e_step_noise10"))
            res["ddpm10_cfg1_out"] = R.p_sample_loop_ddpm(m["s"], s10, x0, lab, 1.0, step_noise=self.x("e2e_step_noise10"))
            res["ddpm10_nocfg_out"] = R.p_sample_loop_ddpm(m["s"], s10, x0, lab, None, step_noise=self.x("e2e_step_noise10"))
            res["ddpm250_out"] = R.p_sample_loop_ddpm(m["s"], s250, x0, lab, 4.0, step_noise=self.x("e2e_step_noise250"))
            res["px_ddpm10_out"] = R.p_sample_loop_ddpm(m["px"], s10, self.x("px_init"), lab, 4.0,
                                                        step_noise=self.x("px_step_noise10"), cfg_channels=1)
            res["philox_ddpm10_out"] = R.p_sample_loop_ddpm(m["s"], s10, self.x("philox_init"), lab, 4.0, seed=42)
            res["vae_out"] = m["vae"].decode(self.x("vae_in") / SCALE)
        return res


def read_safetensors(name):
    """Independent re-read of a safetensors file (checks the header rules) -> OrderedDict of float64 numpy."""
    raw = open(path(name), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    assert n % 8 == 0 and 8 + n <= len(raw)
    hdr = json.loads(raw[8:8 + n].decode("utf-8"))
    hdr.pop("__metadata__", None)
    np_dt = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}
    out, end = OrderedDict(), 0
    for k, info in hdr.items():
        b, e = info["data_offsets"]
        assert b == end, "offsets must be contiguous in order"
        end = e
        out[k] = np.frombuffer(raw[8 + n + b:8 + n + e], dtype=np_dt[info["dtype"]]).reshape(info["shape"]).astype(np.float64)
    assert 8 + n + end == len(raw)
    return out


def verify(sd_xs, sd_vae):
    """Reload every written weight file and compare with the values the references were computed from."""
    def same(a, b, what):
        a = a.float().numpy() if isinstance(a, torch.Tensor) else a
        b = b.float().numpy() if isinstance(b, torch.Tensor) else b
        assert np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64)), what
    for f in ("dit_xs.pt", "dit_xs_legacy.pt", "dit_xs_f64.pt"):
        sd = torch.load(path(f), map_location="cpu")
        assert list(sd) == list(sd_xs)
        for k in sd_xs:
            same(sd[k], sd_xs[k], f + ":" + k)
    ck = torch.load(path("dit_xs_train.pt"), map_location="cpu")
    for k in sd_xs:
        same(ck["ema"][k], sd_xs[k], "train ema " + k)
    assert not torch.equal(ck["model"]["final_layer.linear.weight"], sd_xs["final_layer.linear.weight"])
    for k, v in read_safetensors("dit_xs.safetensors").items():
        same(v, sd_xs[k], "st " + k)
    nc = torch.load(path("dit_xs_noncontig.pt"), map_location="cpu")
    for k, v in nc.items():
        same(v, np.load(path("dit_xs_noncontig_expected/%s.npy" % k)), "noncontig " + k)
    st = read_safetensors("vae_s/diffusion_pytorch_model.safetensors")
    for k, v in sd_vae.items():
        same(st[k], v, "vae " + k)
    leg = read_safetensors("vae_s_legacy.safetensors")
    assert "decoder.mid_block.attentions.0.query.weight" in leg and len(leg) == len(st)
    ldm = torch.load(path("vae_s_ldm.pt"), map_location="cpu")["state_dict"]
    same(ldm["first_stage_model.decoder.up.2.block.0.nin_shortcut.weight"],  # up_blocks.1 <-> up.2
         sd_vae["decoder.up_blocks.1.resnets.0.conv_shortcut.weight"], "ldm shortcut")
    same(ldm["first_stage_model.decoder.mid.attn_1.q.weight"][:, :, 0, 0], sd_vae["decoder.mid_block.attentions.0.to_q.weight"], "ldm q")
    assert len(ldm) == len(st)
    print("verify: all weight files re-read OK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--drift", action="store_true", help="also run in float32 and print max diffs vs float64")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240601)

    # ---- DiT-S fixture model (zip) -------------------------------------------------------------------
    dit_s = R.DiT(**CFG_S)
    sd_s = randomize_dit(dit_s, rng)
    torch.save(sd_s, path("dit_s.pt"))

    # ---- DiT-XS format variants ------------------------------------------------------------------------
    dit_xs = R.DiT(**CFG_XS)
    sd_xs = randomize_dit(dit_xs, rng)
    torch.save(sd_xs, path("dit_xs.pt"))
    save_legacy_deterministic(sd_xs, "dit_xs_legacy.pt")
    save_safetensors("dit_xs.safetensors", sd_xs, {"format": "pt"})
    # "model" entry: the training weights, which differ from the EMA; a loader must take "ema". To keep the file
    # small, "model" shares the ema tensors (same storages, saved once) except three keys that get new values.
    other = R.DiT(**CFG_XS)
    sd_other = OrderedDict(sd_xs)
    for k in ("blocks.0.attn.qkv.weight", "final_layer.linear.weight", "y_embedder.embedding_table.weight"):
        sd_other[k] = torch.from_numpy(rng.standard_normal(tuple(sd_xs[k].shape)) * float(sd_xs[k].std())).float()
    other.load_state_dict(sd_other)
    opt = torch.optim.SGD(other.parameters(), lr=1e-2, momentum=0.9)
    train_args = argparse.Namespace(model="DiT-XS/2", image_size=64, num_classes=10, epochs=1, global_batch_size=8,
                                    global_seed=0, vae="ema", results_dir="results", data_path="/data",
                                    num_workers=4, log_every=100, ckpt_every=50000)
    torch.save({"model": sd_other, "ema": sd_xs, "opt": opt.state_dict(), "args": train_args}, path("dit_xs_train.pt"))
    sd_f16 = OrderedDict((k, v.half()) for k, v in sd_xs.items())
    sd_bf16 = OrderedDict((k, v.bfloat16()) for k, v in sd_xs.items())
    torch.save(sd_f16, path("dit_xs_f16.pt"))
    torch.save(sd_bf16, path("dit_xs_bf16.pt"))
    torch.save(OrderedDict((k, v.double()) for k, v in sd_xs.items()), path("dit_xs_f64.pt"))
    # non-contiguous / offset views, parser test only: a subset of dit_xs keys with the same values
    nc = OrderedDict()
    k_t = "blocks.0.mlp.fc1.weight"  # (288, 72) stored as the transpose of a contiguous (72, 288): strides (1, 288)
    nc[k_t] = sd_xs[k_t].t().contiguous().t()
    shared = ["blocks.0.attn.qkv.bias", "blocks.0.attn.proj.weight", "blocks.0.attn.proj.bias", "final_layer.linear.bias"]
    flat = torch.cat([sd_xs[k].reshape(-1) for k in shared])  # one storage, each key an offset view into it
    off = 0
    for k in shared:
        n = sd_xs[k].numel()
        nc[k] = flat[off:off + n].view(sd_xs[k].shape)
        off += n
    k_ot = "blocks.0.mlp.fc2.weight"  # (72, 288): transpose of a (288, 72) block that starts 100 floats into its storage
    big = torch.zeros(100 + sd_xs[k_ot].numel())
    big[100:].view(288, 72).copy_(sd_xs[k_ot].t())
    nc[k_ot] = big[100:].view(288, 72).t()
    assert not nc[k_t].is_contiguous() and not nc[k_ot].is_contiguous() and nc[k_ot].storage_offset() == 100
    assert nc[shared[1]].storage_offset() > 0
    torch.save(nc, path("dit_xs_noncontig.pt"))
    for k in [k_t, k_ot] + shared:
        save_npy("dit_xs_noncontig_expected/%s.npy" % k, sd_xs[k].numpy())
    dit_xs_f16 = R.DiT(**CFG_XS)
    dit_xs_f16.load_state_dict(OrderedDict((k, v.float()) for k, v in sd_f16.items()))
    dit_xs_bf16 = R.DiT(**CFG_XS)
    dit_xs_bf16.load_state_dict(OrderedDict((k, v.float()) for k, v in sd_bf16.items()))

    # ---- pixel-space model -----------------------------------------------------------------------------
    dit_px = R.DiT(**CFG_PX)
    torch.save(randomize_dit(dit_px, rng), path("dit_px.pt"))

    # ---- tiny VAE ----------------------------------------------------------------------------------------
    vae = R.VAEDecoder(VAE_BLOCKS)
    sd_vae = randomize_vae(vae, rng)
    extra = vae_extra_tensors(rng)
    full = OrderedDict(list(extra.items()) + list(sd_vae.items()))
    save_safetensors("vae_s/diffusion_pytorch_model.safetensors", full)
    with open(path("vae_s/config.json"), "w") as f:
        json.dump({"_class_name": "AutoencoderKL", "_diffusers_version": "0.20.0", "act_fn": "silu",
                   "block_out_channels": VAE_BLOCKS, "down_block_types": ["DownEncoderBlock2D"] * 4,
                   "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
                   "out_channels": 3, "sample_size": 64, "scaling_factor": SCALE,
                   "up_block_types": ["UpDecoderBlock2D"] * 4}, f, indent=2)
        f.write("\n")
    save_safetensors("vae_s_legacy.safetensors", vae_to_legacy(full))
    ldm = OrderedDict(("first_stage_model." + k, v) for k, v in vae_to_ldm(full).items())
    torch.save({"state_dict": ldm}, path("vae_s_ldm.pt"))

    # ---- inputs --------------------------------------------------------------------------------------------
    d = OrderedDict()
    d["fwd_x"] = rng.standard_normal((2, 4, 8, 8))
    d["fwd_t"] = np.array([3, 999])
    d["fwd_y"] = np.array([7, 10])  # 10 = null label
    d["cfg_t"] = np.array([3, 999, 3, 999])
    d["cfg_y"] = np.array([1, 7, 10, 10])
    d["px_fwd_x"] = rng.standard_normal((2, 1, 8, 8))
    d["e2e_labels"] = np.array([1, 7])
    d["e2e_init"] = rng.standard_normal((2, 4, 8, 8))
    d["e2e_step_noise10"] = rng.standard_normal((10, 2, 4, 8, 8))
    d["e2e_step_noise250"] = rng.standard_normal((250, 2, 4, 8, 8))
    d["px_init"] = rng.standard_normal((2, 1, 8, 8))
    d["px_step_noise10"] = rng.standard_normal((10, 2, 1, 8, 8))
    d["vae_in"] = rng.standard_normal((1, 4, 8, 8))
    # inputs are stored as float32 and the reference uses exactly those float32 values
    for k in list(d):
        d[k] = np.asarray(d[k], dtype=np.float32).astype(np.float64)
    d["philox_init"] = np.stack([R.philox_randn(42, n, 0, 4 * 8 * 8) for n in range(2)]).reshape(2, 4, 8, 8).astype(np.float64)
    for k, v in d.items():
        save_npy(k + ".npy", v)
    save_npy("philox_first.npy", R.philox_randn(seed=42, image_index=1, step=3, n=64))
    save_npy("philox_init.npy", d["philox_init"])

    # ---- schedules (float64) -------------------------------------------------------------------------------
    for spacing, fname in (("250", "250"), ("50", "50"), ("ddim50", "ddim50"), ("10", "10"), ("ddim10", "ddim10"),
                          ("10,20,30", "10_20_30"), ("linspace25", "linspace25")):
        save_npy("sched_%s_tmap.npy" % fname, np.array(sorted(R.space_timesteps(1000, spacing)), dtype=np.float64), np.float64)
    s250 = R.make_schedule("250")
    for name, arr in (("betas", s250.betas), ("alphas_cumprod", s250.alphas_cumprod),
                      ("post_logvar_clipped", s250.posterior_log_variance_clipped), ("coef1", s250.posterior_mean_coef1),
                      ("coef2", s250.posterior_mean_coef2), ("sqrt_recip", s250.sqrt_recip_alphas_cumprod),
                      ("sqrt_recipm1", s250.sqrt_recipm1_alphas_cumprod)):
        save_npy("sched_250_%s.npy" % name, arr, np.float64)

    # ---- reference outputs ---------------------------------------------------------------------------------
    models = {"s": dit_s, "xs": dit_xs, "xs_f16": dit_xs_f16, "xs_bf16": dit_xs_bf16, "px": dit_px, "vae": vae}
    ref = Runner(torch.float64, models, d).run()
    for k, v in ref.items():
        save_npy(k + ".npy", v)
    # a runtime that recomputes pos_embed instead of reading it must fail: report the effect of the 0.01 noise
    alt = R.DiT(**CFG_S).double()
    alt.load_state_dict(sd_s)
    alt.pos_embed.data.copy_(torch.from_numpy(R.get_2d_sincos_pos_embed(144, 4))[None])
    with torch.no_grad():
        o2 = alt(t64(d["fwd_x"]), torch.as_tensor(d["fwd_t"]).long(), torch.as_tensor(d["fwd_y"]).long())
    print("pos_embed recomputed instead of read: fwd_out max |diff| = %.3e" % (o2 - ref["fwd_out"]).abs().max().item())
    for k, v in ref.items():
        print("%-20s shape %-18s absmax %.3f  rms %.3f" % (k, tuple(v.shape), v.abs().max().item(), v.pow(2).mean().sqrt().item()))

    if args.drift:
        f32 = Runner(torch.float32, models, d).run()
        print("\nfloat32 PyTorch vs float64 reference (max abs diff, max abs diff / max |ref|):")
        for k, v in ref.items():
            diff = (f32[k].double() - v).abs().max().item()
            print("  %-20s %.3e  %.3e" % (k, diff, diff / v.abs().max().item()))

    verify(sd_xs, sd_vae)
    total = sum(os.path.getsize(p) for p in WRITTEN)
    print("fixtures total: %.2f MB" % (total / 1e6))


if __name__ == "__main__":
    main()
