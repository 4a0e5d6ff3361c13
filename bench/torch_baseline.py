#!/usr/bin/env python3
"""torch_baseline.py -- the PyTorch numbers `make bench` compares dit.c with.

Model: the DiT and VAE decoder modules of tests/ref/dit_ref.py (our own re-implementation; not the official
repository) with the random weights of bench/make_xl.py (same seed -> the same values as the checkpoints
dit.c converts; they are rebuilt in memory, no file is read). Three forward methods are replaced by the
official formulations, which compute the same function but are what sample.py actually runs:
  - TimestepEmbedder: frequencies computed on the CPU in fp32 and moved to the device each call (DiT
    models.py), instead of dit_ref's float64 host round trip (a device sync per call);
  - Attention: F.scaled_dot_product_attention, as timm >= 0.9 (the official DiT with a current timm);
    the VAE mid-block attention likewise (diffusers AttnProcessor2_0);
  - DiT.forward: without dit_ref's intermediate-tensor bookkeeping.

Cases (names for --cases):
  eager256x1 eager256x8 eager512x1  forward_with_cfg, fp32 with TF32 matmul/conv (sample.py), ms/step
  loop256x1                         the whole 250-step DDPM loop (dit_ref.p_sample_loop_ddpm), eager, ms
  vae256x1                          VAE decode of one 32x32 latent, fp32 + TF32, ms
  compile256x1 compile256x8         torch.compile(mode="max-autotune") + autocast bf16, ms/step
                                    (forward_with_cfg_device: timestep frequencies made on the GPU)
  loopc256x1                        the 250-step loop around the compiled forward (after compile256x1)
Timing: CUDA events around each call, calls queued back to back, median (and min) of --reps after --warmup.
Results go to --out (JSON, rewritten after every case, so a killed run keeps what it measured).

Time budget: --deadline (epoch seconds) is the time by which this process must end. A compile is started
only when the time left covers --compile-est seconds (or 1.1 x the compile time already measured here);
skipped cases are recorded with the reason. --wait-file: compile first (no timing), then wait until that
file exists before timing anything (bench.sh creates it when its CPU-only preparation is done).

  python3 bench/torch_baseline.py --out torch.json [--cases all] [--deadline T] [--wait-file F]
  python3 bench/torch_baseline.py --tiny --device cpu --cases eager256x1,loop256x1 --loop-steps 10 --out t.json
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_xl as X  # noqa: E402  (also puts tests/ref on sys.path)
R = X.R

ALL_CASES = ["compile256x1", "loopc256x1", "eager256x1", "eager256x8", "eager512x1", "loop256x1", "vae256x1",
             "compile256x8"]
# performance.md, measured on one H100 with the official code (for a sanity line in the log)
REFERENCE_H100 = {"eager256x1": 13.1, "eager256x8": 29.3, "eager512x1": 28.9, "compile256x1": 4.88,
                  "loop256x1": 7455.0, "vae256x1": 9.9}
SAMPLE_LABELS = [207, 360, 387, 974, 88, 979, 417, 279]


def log(msg):
    print("torch_baseline: " + msg, flush=True)


# ---------------------------------------------------------------------------------------------- official forwards

HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


def _temb_forward(self, t):
    """DiT models.py TimestepEmbedder: freqs in fp32 on the CPU, .to(device); args = t.float() * freqs;
    [cos, sin]; then the MLP."""
    half = self.freq_dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(start=0, end=half, dtype=torch.float32) / half).to(device=t.device)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return self.mlp(emb)


def _attn_forward(self, x):
    """timm >= 0.9 Attention with fused_attn: SDPA on (B, H, T, hd)."""
    B, T, D = x.shape
    qkv = self.qkv(x).reshape(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    o = F.scaled_dot_product_attention(q, k, v)
    return self.proj(o.transpose(1, 2).reshape(B, T, D))


def _vae_attn_forward(self, x):
    """diffusers AttnProcessor2_0 for the VAE mid block: one head of C channels, SDPA."""
    B, C, H, W = x.shape
    h = self.group_norm(x).view(B, C, H * W).transpose(1, 2)
    q, k, v = self.to_q(h), self.to_k(h), self.to_v(h)
    o = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
    o = self.to_out[0](o)
    return x + o.transpose(1, 2).reshape(B, C, H, W)


def _dit_forward(self, x, t, y):
    """DiT models.py forward."""
    x = self.x_embedder(x) + self.pos_embed
    c = self.t_embedder(t) + self.y_embedder(y)
    for block in self.blocks:
        x = block(x, c)
    return self.unpatchify(self.final_layer(x, c))


def forward_with_cfg_device(m, x, t, y, cfg_scale):
    """forward_with_cfg of model m for torch.compile: the same function as the official one, with the
    timestep frequencies made on t's device (the official CPU arange + .to(device) would put a CPU op and a
    copy inside the compiled graph, which can keep Inductor from using CUDA graphs)."""
    half_n = x.shape[0] // 2
    half = x[:half_n]
    xx = torch.cat([half, half], dim=0)
    fh = m.t_embedder.freq_dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(0, fh, dtype=torch.float32, device=t.device) / fh)
    args = t[:, None].float() * freqs[None]
    temb = m.t_embedder.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))
    h = m.x_embedder(xx) + m.pos_embed
    c = temb + m.y_embedder(y)
    for block in m.blocks:
        h = block(h, c)
    out = m.unpatchify(m.final_layer(h, c))
    eps, rest = out[:, :3], out[:, 3:]
    cond, uncond = torch.split(eps, len(eps) // 2, dim=0)
    guided = uncond + cfg_scale * (cond - uncond)
    return torch.cat([torch.cat([guided, guided], dim=0), rest], dim=1)


def patch_official():
    R.TimestepEmbedder.forward = _temb_forward
    R.DiT.forward = _dit_forward
    if HAS_SDPA:
        R.Attention.forward = _attn_forward
        R.MidAttention.forward = _vae_attn_forward


# ---------------------------------------------------------------------------------------------- timing


class Timer:
    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def run(self, fn, warmup, reps, min_warm_s=1.5):
        """Median and min (ms) of `reps` calls after at least `warmup` calls and `min_warm_s` seconds of
        warm-up (an idle GPU needs a moment to reach its clocks: 5 calls of a 13 ms forward are not enough).
        CUDA: an event pair around each call, all calls queued back to back, one synchronisation at the end."""
        t0, i = time.perf_counter(), 0
        while i < warmup or (self.cuda and time.perf_counter() - t0 < min_warm_s):
            fn()
            i += 1
            if self.cuda and i % 8 == 0:
                self.sync()
        self.sync()
        if self.cuda:
            ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
            for s, e in ev:
                s.record()
                fn()
                e.record()
            torch.cuda.synchronize()
            ms = [s.elapsed_time(e) for s, e in ev]
        else:
            ms = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                ms.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(ms), min(ms), ms


def mem_reset(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def mem_peak(device):
    return torch.cuda.max_memory_allocated() if device.type == "cuda" else 0


# ---------------------------------------------------------------------------------------------- runner


class Runner:
    def __init__(self, args):
        self.a = args
        self.dev = torch.device(args.device)
        self.timer = Timer(self.dev)
        self.res = {"meta": self.meta(), "cases": {}}
        self.models = {}
        self.compiled = {}
        self.compile_s_measured = None

    def meta(self):
        m = {"torch": torch.__version__, "device": self.a.device, "sdpa": HAS_SDPA, "tiny": self.a.tiny,
             "seed": self.a.seed, "reps": self.a.reps, "warmup": self.a.warmup, "started": time.time()}
        if self.a.device.startswith("cuda"):
            m["gpu"] = torch.cuda.get_device_name(0)
            m["cuda"] = torch.version.cuda
            m["tf32_matmul"] = True
            m["tf32_cudnn"] = True
        return m

    def save(self):
        if not self.a.out:
            return
        tmp = self.a.out + ".tmp.%d" % os.getpid()
        with open(tmp, "w") as f:
            json.dump(self.res, f, indent=1)
            f.write("\n")
        os.replace(tmp, self.a.out)

    def record(self, name, **kv):
        self.res["cases"][name] = kv
        self.save()
        if "ms" in kv:
            ref = REFERENCE_H100.get(name)
            extra = "  (performance.md, H100: %.4g)" % ref if ref and self.dev.type == "cuda" else ""
            log("%-13s %10.3f ms (median of %d, min %.3f)%s%s" % (
                name, kv["ms"], kv.get("reps", 0), kv.get("min_ms", kv["ms"]),
                ", compile %.0f s" % kv["compile_s"] if "compile_s" in kv else "", extra))
        else:
            log("%-13s %s" % (name, kv.get("skipped", kv.get("error", "?"))))

    def left(self):
        return (self.a.deadline - time.time()) if self.a.deadline else float("inf")

    # ---- models

    def cfg(self):
        return X.TINY if self.a.tiny else X.XL

    def model(self, size):
        if size not in self.models:
            t0 = time.time()
            m, _ = X.build_dit(size // 8, self.a.seed, self.cfg(), self.a.threads)
            self.models[size] = m.to(self.dev).eval()
            log("model %d px: %.1fM params built and moved to %s in %.1f s" % (
                size, sum(p.numel() for p in m.parameters()) / 1e6, self.a.device, time.time() - t0))
        return self.models[size]

    def vae(self):
        if "vae" not in self.models:
            blocks = X.VAE_TINY if self.a.tiny else X.VAE_XL
            self.models["vae"] = X.build_vae(blocks, self.a.seed, self.a.threads).to(self.dev).eval()
        return self.models["vae"]

    def inputs(self, size, n):
        """forward_with_cfg inputs: x (2n, 4, L, L) (only x[:n] is read), t (2n), y = [labels; null]."""
        L = size // 8
        g = torch.Generator().manual_seed(1234 + n)
        x = torch.randn(n, 4, L, L, generator=g)
        x = torch.cat([x, x]).to(self.dev)
        t = torch.full((2 * n,), 500, dtype=torch.long, device=self.dev)
        labels = [SAMPLE_LABELS[i % 8] for i in range(n)]
        y = torch.tensor(labels + [1000] * n, dtype=torch.long, device=self.dev)
        return x, t, y

    # ---- cases

    @torch.no_grad()
    def eager(self, name, size, n):
        m = self.model(size)
        x, t, y = self.inputs(size, n)
        mem_reset(self.dev)
        med, mn, _ = self.timer.run(lambda: m.forward_with_cfg(x, t, y, 4.0), self.a.warmup, self.a.reps)
        self.record(name, ms=med, min_ms=mn, reps=self.a.reps, what="forward_with_cfg, fp32 + TF32, eager",
                    size=size, n=n, peak_mem_bytes=mem_peak(self.dev))

    @torch.no_grad()
    def loop(self, name, fwd_model, what):
        """dit_ref.p_sample_loop_ddpm (sample.py semantics: CFG batch, learned sigma, fresh noise each step)."""
        sched = R.make_schedule(str(self.a.loop_steps))
        L = 32
        g = torch.Generator().manual_seed(0)
        z = torch.randn(1, 4, L, L, generator=g).to(self.dev)
        labels = torch.tensor([207], device=self.dev)
        runs, out = [], None
        mem_reset(self.dev)
        for r in range(self.a.loop_reps + 1):   # run 0: warm-up
            self.timer.sync()
            t0 = time.perf_counter()
            out = R.p_sample_loop_ddpm(fwd_model, sched, z, labels, cfg_scale=4.0)
            self.timer.sync()
            if r:
                runs.append((time.perf_counter() - t0) * 1e3)
        self.record(name, ms=statistics.median(runs), min_ms=min(runs), reps=len(runs), steps=self.a.loop_steps,
                    ms_per_step=statistics.median(runs) / self.a.loop_steps, what=what,
                    latent_absmax=float(out.abs().max()), latent_std=float(out.std()),
                    finite=bool(torch.isfinite(out).all()), peak_mem_bytes=mem_peak(self.dev))

    @torch.no_grad()
    def vae_case(self, name):
        v = self.vae()
        g = torch.Generator().manual_seed(7)
        z = torch.randn(1, 4, 32, 32, generator=g).to(self.dev)
        mem_reset(self.dev)
        med, mn, _ = self.timer.run(lambda: v.decode(z / X.SCALE), self.a.warmup, self.a.reps)
        img = v.decode(z / X.SCALE)
        self.record(name, ms=med, min_ms=mn, reps=self.a.reps, what="VAE decode 256 px, 1 image, fp32 + TF32, eager",
                    image_absmax=float(img.abs().max()), peak_mem_bytes=mem_peak(self.dev))

    def compile_available(self):
        if not hasattr(torch, "compile"):
            return "torch %s has no torch.compile" % torch.__version__
        if self.dev.type != "cuda":
            return "compile is timed on CUDA only"
        return None

    def compile_fn(self, name, size, n):
        """torch.compile(max-autotune) of forward_with_cfg under bf16 autocast; the first calls compile
        (autotuning the GEMMs) and record the CUDA graphs. Returns False if skipped."""
        why = self.compile_available()
        if why:
            self.record(name, skipped=why)
            return False
        est = 1.1 * self.compile_s_measured if self.compile_s_measured else self.a.compile_est
        if self.left() < est + 15:
            self.record(name, skipped="time budget: a compile needs ~%.0f s, %.0f s left" % (est, self.left()))
            return False
        m = self.model(size)
        x, t, y = self.inputs(size, n)

        def f(x, t, y):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return forward_with_cfg_device(m, x, t, y, 4.0)

        cf = torch.compile(f, mode="max-autotune", dynamic=False)
        mark = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)

        def call():
            if mark:
                mark()
            return cf(x, t, y)

        log("compiling %s (max-autotune, bf16 autocast) ..." % name)
        t0 = time.time()
        try:
            with torch.no_grad():
                call()
                torch.cuda.synchronize()
                compile_s = time.time() - t0
                for _ in range(3):   # cudagraph trees: warm-up run, then recording
                    call()
                torch.cuda.synchronize()
        except Exception as e:  # a compile failure is a result, not a crash of the whole bench
            self.record(name, error="compile failed: %s: %s" % (type(e).__name__, str(e).splitlines()[0][:300]))
            return False
        self.compile_s_measured = compile_s
        log("compiled %s in %.1f s (+%.1f s graph recording)" % (name, compile_s, time.time() - t0 - compile_s))
        self.compiled[name] = {"call": call, "cf": cf, "compile_s": compile_s, "size": size, "n": n}
        return True

    @torch.no_grad()
    def compile_time(self, name):
        c = self.compiled[name]
        call, compile_s, size, n = c["call"], c["compile_s"], c["size"], c["n"]
        mem_reset(self.dev)
        med, mn, _ = self.timer.run(call, self.a.warmup, self.a.reps)
        self.record(name, ms=med, min_ms=mn, reps=self.a.reps, compile_s=compile_s, size=size, n=n,
                    what="forward_with_cfg, torch.compile max-autotune, autocast bf16", peak_mem_bytes=mem_peak(self.dev))

    def compiled_loop(self, name):
        if "compile256x1" not in self.compiled:
            self.record(name, skipped="needs compile256x1")
            return
        cf = self.compiled["compile256x1"]["cf"]
        mark = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)
        num_classes = self.model(256).num_classes

        class Compiled:   # what p_sample_loop_ddpm uses: forward_with_cfg and num_classes
            pass
        Compiled.num_classes = num_classes

        def fwc(x, t, y, s, cfg_channels=3):
            # same shapes and dtypes as at compile time (x (2,4,32,32), t and y (2,) int64): no recompile
            if mark:
                mark()
            return cf(x, t, y).float()
        Compiled.forward_with_cfg = staticmethod(fwc)
        self.loop(name, Compiled, "250-step DDPM loop around the compiled forward (bf16 autocast)")

    # ---- driver

    def wait_go(self):
        if not self.a.wait_file:
            return
        t0 = time.time()
        while not os.path.exists(self.a.wait_file):
            if self.left() < 5:
                break
            time.sleep(0.5)
        if time.time() - t0 > 1:
            log("waited %.0f s for %s" % (time.time() - t0, self.a.wait_file))
        self.a.wait_file = None

    def run(self, cases):
        patch_official()
        if self.dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True   # sample.py
            torch.backends.cudnn.allow_tf32 = True
        torch.set_num_threads(self.a.threads)
        for name in cases:
            if self.left() < 5:
                self.record(name, skipped="time budget: %.0f s left" % self.left())
                continue
            try:
                if name.startswith("compile"):
                    size, n = (int(v) for v in name[len("compile"):].split("x"))
                    if self.compile_fn(name, size, n):
                        self.wait_go()
                        self.compile_time(name)
                    continue
                self.wait_go()
                if name.startswith("eager"):
                    size, n = (int(v) for v in name[len("eager"):].split("x"))
                    self.eager(name, size, n)
                elif name == "loop256x1":
                    self.loop(name, self.model(256), "250-step DDPM loop (dit_ref.p_sample_loop_ddpm), eager fp32 + TF32")
                elif name == "loopc256x1":
                    self.compiled_loop(name)
                elif name == "vae256x1":
                    self.vae_case(name)
                else:
                    self.record(name, error="unknown case")
            except Exception as e:  # keep going: one failed case must not lose the others
                self.record(name, error="%s: %s" % (type(e).__name__, str(e).splitlines()[0][:300] if str(e) else ""))
            if self.dev.type == "cuda":
                torch.cuda.empty_cache()
        self.res["meta"]["finished"] = time.time()
        self.save()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="results JSON (rewritten after every case)")
    ap.add_argument("--cases", default="all", help="comma-separated case names, or 'all' (%s)" % ",".join(ALL_CASES))
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--tiny", action="store_true", help="the tiny make_xl shapes (CPU tests)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--loop-steps", type=int, default=250)
    ap.add_argument("--loop-reps", type=int, default=2, help="timed 250-step loops (after one warm-up loop)")
    ap.add_argument("--deadline", type=float, default=0, help="epoch seconds by which to finish (0: none)")
    ap.add_argument("--compile-est", type=float, default=260, help="seconds one max-autotune compile is assumed to take")
    ap.add_argument("--wait-file", default=None)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    a.threads = a.threads or os.cpu_count() or 1
    cases = ALL_CASES if a.cases == "all" else [c for c in a.cases.split(",") if c]
    bad = [c for c in cases if c not in ALL_CASES]
    if bad:
        ap.error("unknown case(s): %s" % ",".join(bad))
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("torch_baseline: error: CUDA requested but torch.cuda.is_available() is False", file=sys.stderr)
        return 1
    r = Runner(a)
    log("torch %s, device %s%s, cases %s, %s" % (
        torch.__version__, a.device, " (%s)" % r.res["meta"].get("gpu") if "gpu" in r.res["meta"] else "",
        ",".join(cases), "deadline in %.0f s" % r.left() if a.deadline else "no deadline"))
    r.run(cases)
    n_err = sum(1 for v in r.res["cases"].values() if "error" in v)
    return 1 if n_err else 0


if __name__ == "__main__":
    sys.exit(main())
