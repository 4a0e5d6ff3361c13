#!/usr/bin/env python3
"""make_xl.py -- random-weight DiT-XL/2 checkpoints and a random SD VAE, with the official layouts.

Writes into OUTDIR:
  DiT-XL-2-256x256.pt   plain flat state_dict (torch.save zip), fp32, the 292 official keys and shapes
  DiT-XL-2-512x512.pt   the same weights, pos_embed for 1024 tokens (only that tensor differs)
  sd-vae-ft-mse/config.json + diffusion_pytorch_model.safetensors
                        diffusers AutoencoderKL, block_out_channels [128,256,512,512], fp32, encoder included,
                        mid-block attention under the hub files' legacy names query/key/value/proj_attn
                        (--vae-keys new: to_q/to_k/to_v/to_out.0)

The modules (key names, shapes) come from tests/ref/dit_ref.py. The weights are random, not the adaLN-Zero
init (zero adaLN / final weights would make every block an identity and time faster on zeros):
  Linear / conv weights  N(0, gain^2 / fan_in), gain 1 (0.6 for adaLN)  -> every GEMM output O(1)
  biases                 N(0, 0.05^2) (adaLN: N(0, 0.1^2), so shift/scale/gate are ~0.3-0.5)
  label table            N(0, 0.5^2);  pos_embed  sincos + N(0, 0.01^2)
  VAE GroupNorm          weight 1 + N(0, 0.1^2), bias N(0, 0.1^2)
(the scheme of tests/ref/make_fixtures.py), final layer smaller (adaLN gain 0.1, bias 0.02; Linear gain
0.05), and one addition, add_identity_path: 16 residual dims carry the patch values untouched to the final
layer, which reads them back, so eps ~ x + O(0.1) like a denoiser at high noise and the 250-step DDPM chain
stays O(1) (with independent random weights the latents grow ~157x, to ~1e3). LayerNorm/GroupNorm
renormalise every sub-layer input, so activations stay O(1) through all 28 blocks; `--check` runs one
forward and prints the largest values.
Every tensor has its own torch.Generator seeded from (seed, key), so the 256 and 512 files share their
weights, the same seed gives the same bytes on any machine, and torch_baseline.py can rebuild the weights
in memory without reading the files (build_dit / build_vae below).

Usage:
  python3 bench/make_xl.py OUTDIR [--sizes 256,512] [--seed 0] [--no-vae] [--check]
  python3 bench/make_xl.py OUTDIR --tiny          # depth 2, hidden 144, VAE [32,32,32,64]: CPU tests
"""
import argparse
import json
import os
import struct
import sys
import time
import zlib
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "ref"))
import dit_ref as R  # noqa: E402

XL = dict(depth=28, hidden_size=1152, num_heads=16, patch_size=2, in_channels=4, num_classes=1000,
          learn_sigma=True, class_dropout_prob=0.1)
TINY = dict(depth=2, hidden_size=144, num_heads=2, patch_size=2, in_channels=4, num_classes=1000,
            learn_sigma=True, class_dropout_prob=0.1)
VAE_XL = [128, 256, 512, 512]          # sd-vae-ft-mse
VAE_TINY = [32, 32, 32, 64]
SCALE = 0.18215


def log(msg):
    print("make_xl: " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- helpers


class _NoInit:
    """Context: nn.Linear/Conv2d/Embedding skip their default init (we overwrite every value anyway;
    the default init of 675M parameters costs seconds)."""
    CLASSES = (nn.Linear, nn.Conv2d, nn.Embedding)

    def __enter__(self):
        self.saved = [(c, c.reset_parameters) for c in self.CLASSES]
        for c in self.CLASSES:
            c.reset_parameters = lambda self: None
        return self

    def __exit__(self, *exc):
        for c, f in self.saved:
            c.reset_parameters = f


def _key_seed(seed, key):
    """Per-tensor seed: 64-bit mix of the run seed and crc32 of the key."""
    return (int(seed) * 1000003 + zlib.crc32(key.encode())) & 0x7FFFFFFFFFFFFFFF


def _randn(seed, key, shape, std, mean=0.0):
    """float32 tensor N(mean, std^2) from the tensor's own generator (CPU, deterministic)."""
    g = torch.Generator().manual_seed(_key_seed(seed, key))
    t = torch.empty(shape, dtype=torch.float32)
    t.normal_(mean=0.0, std=1.0, generator=g)
    t.mul_(std)
    if mean:
        t.add_(mean)
    return t


def _parallel_fill(jobs, threads):
    """jobs: list of (key, fn) with fn() -> tensor. Returns OrderedDict in job order. normal_ releases the
    GIL, so threads give a near-linear speed-up on large tensors."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as ex:
        futs = [(k, ex.submit(fn)) for k, fn in jobs]
        return OrderedDict((k, f.result()) for k, f in futs)


# ---------------------------------------------------------------------------------------------- DiT


def dit_value(seed, key, shape, hidden, g, P=16):
    """The random value of one DiT tensor (see the module docstring). pos_embed is zero on the P identity
    dims (add_identity_path)."""
    if key == "pos_embed":
        base = torch.from_numpy(R.get_2d_sincos_pos_embed(hidden, g)).float().reshape(shape)
        pe = base + _randn(seed, key + ".%d" % g, shape, 0.01)
        pe[..., identity_dims(hidden, P)] = 0
        return pe
    if key == "y_embedder.embedding_table.weight":
        return _randn(seed, key, shape, 0.5)
    final = key.startswith("final_layer.")
    if key.endswith(".bias"):
        return _randn(seed, key, shape, 0.02 if final else 0.1 if "adaLN" in key else 0.05)
    fan_in = int(np.prod(shape[1:]))
    gain = (0.1 if final else 0.6) if "adaLN" in key else 0.05 if final else 1.0
    return _randn(seed, key, shape, gain / np.sqrt(fan_in))


def identity_dims(D, P):
    """The P residual-stream dims that carry the patch values (evenly spread over D)."""
    return [j * (D // P) for j in range(P)]


@torch.no_grad()
def final_token_std(model):
    """Median over tokens of the per-token std of the residual stream entering the final layer, for one
    N(0,1) latent on the model's grid, batch of 4 rows (t = 900, 500, 100, 10; labels 207 / null
    alternating), averaged and rounded to 3 significant digits (so it does not depend on the thread count)."""
    L = model.input_size
    g = torch.Generator().manual_seed(99)
    x = torch.randn(1, model.in_channels, L, L, generator=g).repeat(4, 1, 1, 1)
    t = torch.tensor([900, 500, 100, 10])
    y = torch.tensor([207 % model.num_classes, model.num_classes] * 2)
    h = model.x_embedder(x) + model.pos_embed
    c = model.t_embedder(t).float() + model.y_embedder(y)
    for blk in model.blocks:
        h = blk(h, c)
    return float("%.3g" % float(h.std(dim=-1, unbiased=False).median(dim=-1).values.mean()))


@torch.no_grad()
def add_identity_path(model, seed):
    """Make eps ~ x, like a denoiser at high noise, so the 250-step DDPM chain stays O(1).

    With independent random weights eps does not depend on x, and the chain multiplies x by
    prod 1/sqrt(alpha_t) ~ 157 over 250 steps (latents ~1e3, VAE inputs ~1e4). Instead P = C*p*p residual
    dims (identity_dims) carry the patch values untouched: the patch embedding writes x there through a
    random orthogonal P x P matrix U (rows of x_embedder elsewhere are zero), and nothing else writes there
    (those rows of pos_embed, x_embedder bias, every attn.proj / mlp.fc2 weight and bias, and the final
    shift/scale are zero; gates and modulation are per-dim, so the dims stay clean). The final LayerNorm
    divides them by the token std sigma, which the other 1136 dims dominate, so the eps rows of the final
    Linear read them back through sigma * U^T: eps = x + O(0.1). Latent channel c of patch pixel (kh, kw)
    is patch column (c*p + kh)*p + kw (conv weight order) and final feature (kh*p + kw)*out_ch + c (§1.10)."""
    sd = model.state_dict()
    D, p, C, OC = model.hidden_size, model.patch_size, model.in_channels, model.out_channels
    P = C * p * p
    idx = torch.tensor(identity_dims(D, P))
    g = torch.Generator().manual_seed(_key_seed(seed, "identity"))
    U, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64)) if hasattr(torch, "linalg") \
        else torch.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    U = U.float()
    E = sd["x_embedder.proj.weight"].view(D, P)
    E.zero_()
    E[idx] = U
    sd["x_embedder.proj.bias"][idx] = 0
    sd["pos_embed"][..., idx] = 0
    for i in range(model.depth):
        for k in ("attn.proj", "mlp.fc2"):
            sd["blocks.%d.%s.weight" % (i, k)][idx] = 0
            sd["blocks.%d.%s.bias" % (i, k)][idx] = 0
    fa_w, fa_b = sd["final_layer.adaLN_modulation.1.weight"], sd["final_layer.adaLN_modulation.1.bias"]
    for off in (0, D):   # shift rows, scale rows
        fa_w[off + idx] = 0
        fa_b[off + idx] = 0
    sigma = final_token_std(model)
    W = sd["final_layer.linear.weight"]   # (p*p*OC, D)
    W[:, idx] = 0
    for c in range(C):
        for kh in range(p):
            for kw in range(p):
                W[(kh * p + kw) * OC + c, idx] = sigma * U[:, (c * p + kh) * p + kw]
    return sigma


def build_dit(input_size=32, seed=0, cfg=None, threads=None):
    """dit_ref.DiT of the XL shapes (or cfg) with the random weights of `seed`. Returns (model, state_dict).
    The state_dict tensors are the model's own parameters (no copy). The eps identity path is calibrated on
    the 256 px grid, so the 512 px model built from the same seed has the same weights except pos_embed."""
    cfg = dict(XL if cfg is None else cfg)
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    with _NoInit():
        model = R.DiT(input_size=input_size, **cfg)
    g = input_size // cfg["patch_size"]
    sd = model.state_dict()
    jobs = [(k, (lambda k=k, v=v: dit_value(seed, k, tuple(v.shape), cfg["hidden_size"], g))) for k, v in sd.items()]
    vals = _parallel_fill(jobs, threads)
    with torch.no_grad():
        for k, v in sd.items():
            v.copy_(vals[k])
    model.eval()
    # the identity path is calibrated on the 256 px grid (a 32x32 model with the same weights but pos_embed),
    # so the 512 px model of the same seed has the same weights except pos_embed
    if input_size == 32:
        cal = model
    else:
        with _NoInit():
            cal = R.DiT(input_size=32, **cfg)
        csd = cal.state_dict()
        with torch.no_grad():
            for k, v in csd.items():
                v.copy_(dit_value(seed, k, tuple(v.shape), cfg["hidden_size"], 32 // cfg["patch_size"])
                        if k == "pos_embed" else sd[k])
        cal.eval()
    alpha = add_identity_path(cal, seed)
    if cal is not model:
        csd = cal.state_dict()
        with torch.no_grad():
            for k, v in sd.items():
                if k != "pos_embed":
                    v.copy_(csd[k])
    model.identity_alpha = alpha
    return model, sd


# ---------------------------------------------------------------------------------------------- VAE


def _resnet_shapes(prefix, cin, cout):
    s = [(prefix + "norm1.weight", (cin,)), (prefix + "norm1.bias", (cin,)),
         (prefix + "conv1.weight", (cout, cin, 3, 3)), (prefix + "conv1.bias", (cout,)),
         (prefix + "norm2.weight", (cout,)), (prefix + "norm2.bias", (cout,)),
         (prefix + "conv2.weight", (cout, cout, 3, 3)), (prefix + "conv2.bias", (cout,))]
    if cin != cout:
        s += [(prefix + "conv_shortcut.weight", (cout, cin, 1, 1)), (prefix + "conv_shortcut.bias", (cout,))]
    return s


def _mid_shapes(prefix, c, legacy):
    names = ("query", "key", "value", "proj_attn") if legacy else ("to_q", "to_k", "to_v", "to_out.0")
    s = _resnet_shapes(prefix + "resnets.0.", c, c)
    a = prefix + "attentions.0."
    s += [(a + "group_norm.weight", (c,)), (a + "group_norm.bias", (c,))]
    for n in names:
        s += [(a + n + ".weight", (c, c)), (a + n + ".bias", (c,))]
    s += _resnet_shapes(prefix + "resnets.1.", c, c)
    return s


def vae_shapes(blocks, layers_per_block=2, latent=4, in_ch=3, out_ch=3, legacy=True):
    """(key, shape) of a whole diffusers AutoencoderKL (encoder, quant_conv, post_quant_conv, decoder), in the
    order diffusers' state_dict lists them."""
    s = [("encoder.conv_in.weight", (blocks[0], in_ch, 3, 3)), ("encoder.conv_in.bias", (blocks[0],))]
    prev = blocks[0]
    for i, c in enumerate(blocks):  # DownEncoderBlock2D: layers_per_block resnets, downsampler except last
        for j in range(layers_per_block):
            s += _resnet_shapes("encoder.down_blocks.%d.resnets.%d." % (i, j), prev if j == 0 else c, c)
        if i != len(blocks) - 1:
            s += [("encoder.down_blocks.%d.downsamplers.0.conv.weight" % i, (c, c, 3, 3)),
                  ("encoder.down_blocks.%d.downsamplers.0.conv.bias" % i, (c,))]
        prev = c
    s += _mid_shapes("encoder.mid_block.", blocks[-1], legacy)
    s += [("encoder.conv_norm_out.weight", (blocks[-1],)), ("encoder.conv_norm_out.bias", (blocks[-1],)),
          ("encoder.conv_out.weight", (2 * latent, blocks[-1], 3, 3)), ("encoder.conv_out.bias", (2 * latent,))]
    rev = list(reversed(blocks))
    s += [("decoder.conv_in.weight", (rev[0], latent, 3, 3)), ("decoder.conv_in.bias", (rev[0],))]
    s += _mid_shapes("decoder.mid_block.", rev[0], legacy)
    prev = rev[0]
    for i, c in enumerate(rev):  # UpDecoderBlock2D: layers_per_block + 1 resnets, upsampler except last
        for j in range(layers_per_block + 1):
            s += _resnet_shapes("decoder.up_blocks.%d.resnets.%d." % (i, j), prev if j == 0 else c, c)
        if i != len(rev) - 1:
            s += [("decoder.up_blocks.%d.upsamplers.0.conv.weight" % i, (c, c, 3, 3)),
                  ("decoder.up_blocks.%d.upsamplers.0.conv.bias" % i, (c,))]
        prev = c
    s += [("decoder.conv_norm_out.weight", (blocks[0],)), ("decoder.conv_norm_out.bias", (blocks[0],)),
          ("decoder.conv_out.weight", (out_ch, blocks[0], 3, 3)), ("decoder.conv_out.bias", (out_ch,))]
    s += [("quant_conv.weight", (2 * latent, 2 * latent, 1, 1)), ("quant_conv.bias", (2 * latent,)),
          ("post_quant_conv.weight", (latent, latent, 1, 1)), ("post_quant_conv.bias", (latent,))]
    return s


LEGACY_TO_NEW = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}


def _canonical(key):
    """Legacy attention names -> the new ones, so both spellings get the same random values."""
    for a, b in LEGACY_TO_NEW.items():
        if ".attentions.0" + a in key:
            return key.replace(".attentions.0" + a, ".attentions.0" + b)
    return key


def vae_value(seed, key, shape):
    k = _canonical(key)
    is_norm = "norm" in k and len(shape) == 1
    if is_norm and k.endswith(".weight"):
        return _randn(seed, "vae." + k, shape, 0.1, mean=1.0)
    if is_norm or k.endswith(".bias"):
        return _randn(seed, "vae." + k, shape, 0.1 if is_norm else 0.05)
    return _randn(seed, "vae." + k, shape, 1.0 / np.sqrt(int(np.prod(shape[1:]))))


def build_vae_state(blocks=VAE_XL, seed=0, legacy=True, threads=None):
    """Full AutoencoderKL state_dict (OrderedDict of fp32 tensors)."""
    threads = threads or os.cpu_count() or 1
    jobs = [(k, (lambda k=k, s=s: vae_value(seed, k, s))) for k, s in vae_shapes(blocks, legacy=legacy)]
    return _parallel_fill(jobs, threads)


def build_vae(blocks=VAE_XL, seed=0, threads=None):
    """dit_ref.VAEDecoder with the decoder part of build_vae_state(seed)."""
    sd = build_vae_state(blocks, seed, legacy=False, threads=threads)
    with _NoInit():
        vae = R.VAEDecoder(blocks)
    own = vae.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        raise RuntimeError("VAE keys not generated: %s" % missing[:5])
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(sd[k])
    return vae.eval()


def vae_config(blocks):
    return OrderedDict([
        ("_class_name", "AutoencoderKL"), ("_diffusers_version", "0.4.2"), ("act_fn", "silu"),
        ("block_out_channels", list(blocks)), ("down_block_types", ["DownEncoderBlock2D"] * len(blocks)),
        ("in_channels", 3), ("latent_channels", 4), ("layers_per_block", 2), ("norm_num_groups", 32),
        ("out_channels", 3), ("sample_size", 256), ("scaling_factor", SCALE),
        ("up_block_types", ["UpDecoderBlock2D"] * len(blocks))])


# ---------------------------------------------------------------------------------------------- writers


def _atomic_path(path):
    return path + ".tmp.%d" % os.getpid()


def save_torch(sd, path):
    tmp = _atomic_path(path)
    try:
        torch.save(sd, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_safetensors(tensors, path, metadata=None):
    """safetensors: u64 LE header length N, N bytes of JSON (space-padded to a multiple of 8), then the
    tensor bytes back to back in dict order; data_offsets relative to byte 8 + N. fp32 only."""
    header, off = OrderedDict(), 0
    if metadata:
        header["__metadata__"] = metadata
    for k, t in tensors.items():
        assert t.dtype == torch.float32
        n = t.numel() * 4
        header[k] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + n]}
        off += n
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    tmp = _atomic_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(hj)))
            f.write(hj)
            for t in tensors.values():
                f.write(t.contiguous().numpy().astype("<f4", copy=False).tobytes())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------------------------------------- check


@torch.no_grad()
def check_forward(model, input_size, seed=0):
    """One forward_with_cfg (1 image, batch 2) in fp32 on the model's device; returns a dict of the largest
    |value| of the residual stream, the GEMM inputs (after modulate) and the fc1 outputs (pre-GELU)."""
    dev = next(model.parameters()).device
    stats = {"resid": 0.0, "gemm_in": 0.0, "fc1_out": 0.0, "attn_logit": 0.0}

    def hook(name):
        def f(mod, inp, out):
            stats["gemm_in"] = max(stats["gemm_in"], float(inp[0].abs().max()))
            if name == "fc1":
                stats["fc1_out"] = max(stats["fc1_out"], float(out.abs().max()))
        return f

    hs = []
    for blk in model.blocks:
        hs.append(blk.attn.qkv.register_forward_hook(hook("qkv")))
        hs.append(blk.mlp.fc1.register_forward_hook(hook("fc1")))
        hs.append(blk.mlp.fc2.register_forward_hook(hook("fc2")))
        hs.append(blk.attn.proj.register_forward_hook(hook("proj")))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, input_size, input_size, generator=g).to(dev)
    x = torch.cat([x, x])
    t = torch.tensor([999, 999], device=dev)
    y = torch.tensor([207, model.num_classes], device=dev)
    out, inter = model.forward(x, t, y, return_intermediates=True)
    for h in hs:
        h.remove()
    for k, v in inter.items():
        if k.startswith("block"):
            stats["resid"] = max(stats["resid"], float(v.abs().max()))
    eps = out[:1, :4].reshape(-1)
    xs = x[:1].reshape(-1)
    stats["eps_x_corr"] = float(((eps - eps.mean()) * (xs - xs.mean())).mean() / (eps.std() * xs.std()))
    stats["out_max"] = float(out.abs().max())
    stats["out_std"] = float(out.std())
    stats["finite"] = bool(torch.isfinite(out).all())
    return stats


# ---------------------------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--sizes", default="256,512", help="image sizes of the DiT files (256 -> 32x32 latents)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-vae", action="store_true")
    ap.add_argument("--vae-keys", choices=("legacy", "new"), default="legacy",
                    help="mid-block attention names: legacy query/key/value/proj_attn (hub files) or to_q/...")
    ap.add_argument("--tiny", action="store_true", help="depth 2, hidden 144, VAE [32,32,32,64] (CPU tests)")
    ap.add_argument("--check", action="store_true", help="run one fp32 forward per size and print the largest values")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    os.makedirs(args.outdir, exist_ok=True)
    cfg = TINY if args.tiny else XL
    vblocks = VAE_TINY if args.tiny else VAE_XL
    name = "DiT-tiny-2" if args.tiny else "DiT-XL-2"
    sizes = [int(s) for s in args.sizes.split(",") if s]
    for s in sizes:
        if s % 8 or (s // 8) % cfg["patch_size"]:
            ap.error("size %d: must be a multiple of 16" % s)
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    model = None
    for s in sizes:
        t0 = time.time()
        L = s // 8
        if model is None:
            model, sd = build_dit(L, args.seed, cfg, threads)
        else:  # same weights: only pos_embed depends on the size
            alpha = model.identity_alpha
            with _NoInit():
                model = R.DiT(input_size=L, **cfg)
            new = model.state_dict()
            with torch.no_grad():
                for k, v in new.items():
                    if k == "pos_embed":
                        v.copy_(dit_value(args.seed, k, tuple(v.shape), cfg["hidden_size"], L // cfg["patch_size"]))
                    else:
                        v.copy_(sd[k])
            sd = new
            model.eval()
            model.identity_alpha = alpha
        t1 = time.time()
        path = os.path.join(args.outdir, "%s-%dx%d.pt" % (name, s, s))
        save_torch(sd, path)
        nparam = sum(v.numel() for v in sd.values())
        log("%s: %d tensors, %.1fM params, %.0f MB (generate %.1f s, write %.1f s)" % (
            path, len(sd), nparam / 1e6, os.path.getsize(path) / 1e6, t1 - t0, time.time() - t1))
        if args.check:
            t2 = time.time()
            st = check_forward(model, L, args.seed)
            log("check %d: max|resid| %.3g, max|GEMM input| %.3g, max|fc1 out| %.3g, out max %.3g std %.3g, "
                "corr(eps, x) %.2f (identity path x%.3g), finite %s (%.1f s)" % (
                    s, st["resid"], st["gemm_in"], st["fc1_out"], st["out_max"], st["out_std"], st["eps_x_corr"],
                    getattr(model, "identity_alpha", 0), st["finite"], time.time() - t2))
            if not st["finite"] or max(st["resid"], st["gemm_in"], st["fc1_out"]) > 6e4:
                log("error: activations overflow fp16")
                return 1
    if not args.no_vae:
        t0 = time.time()
        sdv = build_vae_state(vblocks, args.seed, legacy=(args.vae_keys == "legacy"), threads=threads)
        vdir = os.path.join(args.outdir, "sd-vae-tiny" if args.tiny else "sd-vae-ft-mse")
        os.makedirs(vdir, exist_ok=True)
        save_safetensors(sdv, os.path.join(vdir, "diffusion_pytorch_model.safetensors"))
        cfgp = os.path.join(vdir, "config.json")
        with open(cfgp + ".tmp", "w") as f:
            json.dump(vae_config(vblocks), f, indent=2)
            f.write("\n")
        os.replace(cfgp + ".tmp", cfgp)
        log("%s: %d tensors, %.1fM params (%.1f s)" % (vdir, len(sdv), sum(v.numel() for v in sdv.values()) / 1e6,
                                                      time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
