"""train.py -- a small class-conditional pixel-space DiT on Fashion-MNIST, and the MLP classifier that scores it.

    # DiT (GPU; stops after --minutes, saves {"model","ema","opt","args"} like DiT's train.py; convert the "ema")
    python models/fashion/train.py --data .data --out fashion_dit.pt --minutes 8
    python models/fashion/train.py --data .data --out fashion_dit.pt --minutes 8 --resume fashion_dit.pt
    # classifier for tools/dit-quality (CPU is fine, ~1 min): writes a GGUF
    python models/fashion/train.py --data .data --classifier fashion_classifier.gguf

--data DIR holds the 4 idx files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-...); here they are
in /usr/share/datasets/fashion-mnist, elsewhere copy them into the git-ignored .data/.

Model (see README.md): official DiT code path (tests/ref/dit_ref.py), input 28x28x1, patch 4 (7x7 = 49 tokens),
hidden 192, depth 6, heads 3 (head dim 64), learn_sigma, 10 classes + null, class dropout 0.1, adaLN-Zero init.
Loss: DiT's training_losses (MSE on eps + VLB of the learned-range variance), 1000-step linear schedule.
Images: x = p/255*2 - 1 in [-1, 1], no flips (Fashion-MNIST shoes all face one way).
Runs on torch 1.13 and 2.x; no torch.compile.
"""
import argparse
import copy
import gzip
import math
import os
import struct
import sys
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "ref"))
import dit_ref as R  # noqa: E402

MODEL_CFG = dict(input_size=28, patch_size=4, in_channels=1, hidden_size=192, depth=6, num_heads=3,
                 num_classes=10, learn_sigma=True, class_dropout_prob=0.1)

# =====================================================================================================
# data
# =====================================================================================================


def read_idx(path):
    """idx file (gzip): magic 0x0000 08 <ndims>, ndims big-endian u32 sizes, then uint8 data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndims = struct.unpack(">HBB", raw[:4])
    assert zero == 0 and dtype == 8, "%s: not an unsigned-byte idx file" % path
    dims = struct.unpack(">" + "I" * ndims, raw[4:4 + 4 * ndims])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndims).reshape(dims)


def load_fashion(data_dir, split):
    """split 'train' or 't10k' -> images uint8 (n, 28, 28), labels int64 (n,)."""
    imgs = read_idx(os.path.join(data_dir, "%s-images-idx3-ubyte.gz" % split))
    labels = read_idx(os.path.join(data_dir, "%s-labels-idx1-ubyte.gz" % split)).astype(np.int64)
    assert imgs.shape[0] == labels.shape[0]
    return imgs, labels


def to_unit(imgs_u8):
    """pixel p in [0, 255] -> x = p/255*2 - 1 in [-1, 1] (float32). Same preprocessing for DiT and classifier."""
    return imgs_u8.astype(np.float32) / 255.0 * 2.0 - 1.0


# =====================================================================================================
# DiT training
# =====================================================================================================


def dit_forward_flops(cfg):
    """FLOPs (2 per multiply-add) of one forward of one image, matmuls only (norms/softmax/activations ignored).
    T tokens, D hidden, P = p*p*C_in patch size, O = p*p*C_out:
      patch T*P*D + t_emb (256*D + D*D) + depth*(adaLN 6*D*D + qkv 3*T*D*D + q k^T and att v 2*T*T*D + proj T*D*D
      + mlp 8*T*D*D) + final adaLN 2*D*D + final linear T*D*O."""
    g = cfg["input_size"] // cfg["patch_size"]
    T, D, p = g * g, cfg["hidden_size"], cfg["patch_size"]
    P = p * p * cfg["in_channels"]
    O = p * p * cfg["in_channels"] * (2 if cfg["learn_sigma"] else 1)
    block = 6 * D * D + 3 * T * D * D + 2 * T * T * D + T * D * D + 8 * T * D * D
    macs = T * P * D + 256 * D + D * D + cfg["depth"] * block + 2 * D * D + T * D * O
    return 2 * macs


@torch.no_grad()
def update_ema(ema, model, decay):
    """ema = decay * ema + (1 - decay) * model, over all parameters (pos_embed included, as DiT does)."""
    ema_p = OrderedDict(ema.named_parameters())
    for name, p in model.named_parameters():
        ema_p[name].mul_(decay).add_(p.detach(), alpha=1 - decay)


def save_checkpoint(path, model, ema, opt, args):
    """DiT train.py format: {"model", "ema", "opt", "args"}; fp32 state_dicts. Written to a temp file, then renamed."""
    ckpt = {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "args": args}
    tmp = path + ".tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def train_dit(args):
    dev = torch.device(args.device)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    imgs, labels = load_fashion(args.data, "train")
    X = torch.from_numpy(to_unit(imgs)).unsqueeze(1).to(dev)  # (60000, 1, 28, 28)
    Y = torch.from_numpy(labels).to(dev)
    n = X.shape[0]

    model = R.DiT(**MODEL_CFG)
    model.initialize_weights()
    model = model.to(dev)
    ema = copy.deepcopy(model).to(dev)
    for p in ema.parameters():
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]  # pos_embed is fixed
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0)
    step = 0
    if args.resume:
        ck = torch.load(args.resume, map_location=dev)
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        step = int(getattr(ck["args"], "train_steps", 0))
        print("resumed from %s at step %d" % (args.resume, step))
    sched = R.make_schedule("")  # 1000 steps, linear betas
    nparams = sum(p.numel() for p in model.parameters())
    print("DiT %s: %.2fM parameters, %.3f GFLOP per image forward, device %s, bf16 %s"
          % (MODEL_CFG, nparams / 1e6, dit_forward_flops(MODEL_CFG) / 1e9, dev, args.bf16))

    use_bf16 = args.bf16 and dev.type == "cuda"
    model.train()
    ema.eval()
    t_start = time.time()
    t_log = t_start
    last_save = t_start
    while True:
        elapsed = time.time() - t_start
        if (args.max_steps and step >= args.max_steps) or elapsed > args.minutes * 60:
            break
        idx = torch.randint(0, n, (args.batch_size,), device=dev)
        x0, y = X[idx], Y[idx]
        t = torch.randint(0, sched.K, (args.batch_size,), device=dev)
        lr = args.lr * min(1.0, (step + 1) / max(1, args.warmup))
        for gr in opt.param_groups:
            gr["lr"] = lr
        if use_bf16:
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                losses = R.training_losses(model, sched, x0, t, y)
        else:
            losses = R.training_losses(model, sched, x0, t, y)
        loss = losses["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        # EMA with a warm-up so the average is not stuck at the zero init on short runs
        update_ema(ema, model, min(args.ema_decay, (1 + step) / (10 + step)))
        if step % args.log_every == 0:
            now = time.time()
            print("step %6d  loss %.4f  mse %.4f  vb %.4f  lr %.2e  %.1f steps/s  %.1f min"
                  % (step, loss.item(), losses["mse"].mean().item(), losses["vb"].mean().item(), lr,
                     args.log_every / (now - t_log), (now - t_start) / 60), flush=True)
            t_log = now
        if args.out and args.save_every_min > 0 and time.time() - last_save > args.save_every_min * 60:
            args.train_steps = step
            save_checkpoint(args.out, model, ema, opt, args)
            last_save = time.time()
    args.train_steps = step
    print("stopped at step %d after %.1f min" % (step, (time.time() - t_start) / 60))
    if args.out:
        save_checkpoint(args.out, model, ema, opt, args)
        print("saved %s (convert its \"ema\")" % args.out)
    if args.sample_png:
        write_sample_grid(ema, args.sample_png, dev, args.sample_steps)


# ---- optional visual check --------------------------------------------------------------------------


def write_png_gray(path, img_u8):
    """Minimal 8-bit grayscale PNG: signature, IHDR, one zlib IDAT (filter 0 per row), IEND."""
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    h, w = img_u8.shape
    rows = b"".join(b"\x00" + img_u8[r].tobytes() for r in range(h))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


@torch.no_grad()
def write_sample_grid(ema, path, dev, steps, cfg_scale=4.0):
    """10x10 grid (row = class) sampled with DDIM (spacing str(steps), eta 0) from the EMA model, CFG on the
    single eps channel. Pixels: round((clamp(x,-1,1)+1)/2*255)."""
    ema.eval()
    sched = R.make_schedule(str(steps))
    labels = torch.arange(10, device=dev).repeat_interleave(10)
    x = torch.randn(100, 1, 28, 28, device=dev)
    x = R.ddim_loop(ema, sched, x, labels, cfg_scale, eta=0.0, cfg_channels=1)
    u8 = ((x.clamp(-1, 1) + 1) / 2 * 255 + 0.5).floor().clamp(0, 255).to(torch.uint8).cpu().numpy()[:, 0]
    grid = np.zeros((10 * 30, 10 * 30), np.uint8)
    for i in range(100):
        r, c = divmod(i, 10)
        grid[r * 30 + 1:r * 30 + 29, c * 30 + 1:c * 30 + 29] = u8[i]
    write_png_gray(path, grid)
    print("wrote %s (rows = classes 0..9, DDIM %d steps, cfg %.1f)" % (path, steps, cfg_scale))


# =====================================================================================================
# classifier for tools/dit-quality
# =====================================================================================================


class Classifier(nn.Module):
    """784 -> 256 -> 64 -> 10, ReLU after fc1 and fc2. Input x = p/255*2 - 1 (flattened row-major 28x28).
    Features for the Frechet distance: relu(fc2(relu(fc1(x)))) (64-d)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.fc2 = nn.Linear(256, 64)
        self.fc3 = nn.Linear(64, 10)

    def features(self, x):
        return torch.relu(self.fc2(torch.relu(self.fc1(x))))

    def forward(self, x):
        return self.fc3(self.features(x))


def train_classifier(args):
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    xtr, ytr = load_fashion(args.data, "train")
    xte, yte = load_fashion(args.data, "t10k")
    Xtr = torch.from_numpy(to_unit(xtr).reshape(-1, 784)).to(dev)
    Ytr = torch.from_numpy(ytr).to(dev)
    Xte = torch.from_numpy(to_unit(xte).reshape(-1, 784)).to(dev)
    Yte = torch.from_numpy(yte).to(dev)
    net = Classifier().to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    epochs = args.cls_epochs
    steps_per_epoch = (Xtr.shape[0] + 255) // 256
    lr_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(Xtr.shape[0], device=dev)
        for i in range(steps_per_epoch):
            b = perm[i * 256:(i + 1) * 256]
            loss = nn.functional.cross_entropy(net(Xtr[b]), Ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            lr_sched.step()
            if args.max_steps and i + 1 >= args.max_steps:
                break
        acc = evaluate(net, Xte, Yte)
        print("classifier epoch %d  loss %.4f  test accuracy %.4f" % (ep + 1, loss.item(), acc), flush=True)
    acc = evaluate(net, Xte, Yte)
    tensors = [(k, v.detach().cpu().float().numpy()) for k, v in net.state_dict().items()]
    kvs = [("general.architecture", "str", "dit-classifier"),
           ("general.name", "str", "fashion-mnist-mlp"),
           ("general.alignment", "u32", 32),
           ("classifier.test_accuracy", "f32", float(acc)),
           ("classifier.input", "str", "x = p/255*2-1 for pixel p in [0,255], 28x28 row-major, 784 values"),
           ("classifier.features", "str", "relu(fc2(relu(fc1(x)))), 64-d"),
           ("classifier.layers", "str", "fc1 784->256 relu, fc2 256->64 relu, fc3 64->10 logits")]
    write_gguf(args.classifier, kvs, tensors)
    check_gguf(args.classifier, tensors)
    print("wrote %s  (test accuracy %.4f)" % (args.classifier, acc))


@torch.no_grad()
def evaluate(net, X, Y):
    net.eval()
    pred = torch.cat([net(X[i:i + 2000]).argmax(1) for i in range(0, X.shape[0], 2000)])
    return (pred == Y).float().mean().item()


# ---- minimal GGUF v3 writer (f32 tensors only) ---------------------------------------------------------

GGUF_U32, GGUF_F32, GGUF_STR = 4, 6, 8
GGML_F32 = 0
ALIGN = 32


def _gguf_str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _pad(n, a=ALIGN):
    return (n + a - 1) // a * a


def write_gguf(path, kvs, tensors):
    """GGUF v3, little-endian: "GGUF", u32 version 3, u64 n_tensors, u64 n_kv; KVs (string key, u32 type, value);
    tensor infos (name, u32 n_dims, u64 ne[n_dims] = torch shape reversed, u32 type F32=0, u64 offset);
    zero padding to 32; data: each tensor's bytes at offset = running sum of 32-padded sizes."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)))
    for key, typ, val in kvs:
        out += _gguf_str(key)
        if typ == "str":
            out += struct.pack("<I", GGUF_STR) + _gguf_str(val)
        elif typ == "u32":
            out += struct.pack("<II", GGUF_U32, val)
        elif typ == "f32":
            out += struct.pack("<If", GGUF_F32, val)
        else:
            raise ValueError(typ)
    off, blobs = 0, []
    for name, arr in tensors:
        arr = np.ascontiguousarray(arr, dtype="<f4")
        ne = list(reversed(arr.shape))
        out += _gguf_str(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne)
        out += struct.pack("<IQ", GGML_F32, off)
        blobs.append(arr.tobytes())
        off += _pad(arr.nbytes)
    out += b"\x00" * (_pad(len(out)) - len(out))
    for b in blobs:
        out += b + b"\x00" * (_pad(len(b)) - len(b))
    with open(path, "wb") as f:
        f.write(out)


def check_gguf(path, tensors):
    """Re-read the file independently of the writer's bookkeeping and compare the tensors."""
    raw = open(path, "rb").read()
    assert raw[:4] == b"GGUF"
    ver, nt, nkv = struct.unpack("<IQQ", raw[4:24])
    pos = 24

    def rstr(pos):
        n = struct.unpack("<Q", raw[pos:pos + 8])[0]
        return raw[pos + 8:pos + 8 + n].decode(), pos + 8 + n
    for _ in range(nkv):
        _, pos = rstr(pos)
        typ = struct.unpack("<I", raw[pos:pos + 4])[0]
        pos += 4
        if typ == GGUF_STR:
            _, pos = rstr(pos)
        else:
            pos += 4
    infos = []
    for _ in range(nt):
        name, pos = rstr(pos)
        nd = struct.unpack("<I", raw[pos:pos + 4])[0]
        ne = struct.unpack("<%dQ" % nd, raw[pos + 4:pos + 4 + 8 * nd])
        typ, off = struct.unpack("<IQ", raw[pos + 4 + 8 * nd:pos + 16 + 8 * nd])
        pos += 16 + 8 * nd
        infos.append((name, ne, typ, off))
    data = _pad(pos)
    for (name, ne, typ, off), (tn, arr) in zip(infos, tensors):
        assert name == tn and typ == GGML_F32 and off % ALIGN == 0 and tuple(reversed(ne)) == arr.shape
        got = np.frombuffer(raw, dtype="<f4", count=arr.size, offset=data + off).reshape(arr.shape)
        assert np.array_equal(got, arr), name


# =====================================================================================================


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist", help="folder with the 4 idx .gz files")
    ap.add_argument("--out", default="fashion_dit.pt", help="checkpoint {model, ema, opt, args}")
    ap.add_argument("--resume", default="", help="checkpoint to continue from")
    ap.add_argument("--minutes", type=float, default=8.0, help="stop, save and exit after this wall time")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0 = no limit; for smoke tests)")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=3e-4, help="AdamW, weight decay 0")
    ap.add_argument("--warmup", type=int, default=500, help="linear lr warm-up steps")
    ap.add_argument("--ema-decay", type=float, default=0.9995)
    ap.add_argument("--bf16", type=int, default=1, help="bf16 autocast on CUDA (1/0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--save-every-min", type=float, default=2.0, help="also save every N minutes (0 = only at the end)")
    ap.add_argument("--sample-png", default="", help="after training, write a 10x10 grid of EMA samples here")
    ap.add_argument("--sample-steps", type=int, default=50)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--classifier", default="", help="train the MLP classifier instead and write this GGUF")
    ap.add_argument("--cls-epochs", type=int, default=15)
    args = ap.parse_args()
    args.model = "DiT-Fashion/4"
    args.image_size = 28
    args.num_classes = 10
    args.model_config = dict(MODEL_CFG)
    for k, v in MODEL_CFG.items():  # flat copies, so a converter can read e.g. args.num_heads directly
        setattr(args, k, v)
    if args.classifier:
        train_classifier(args)
    else:
        train_dit(args)


if __name__ == "__main__":
    main()
