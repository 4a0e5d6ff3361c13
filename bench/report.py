#!/usr/bin/env python3
"""report.py -- the `make bench` table: reads bench/.work/*.json, prints markdown, appends it to RESULTS.md.

Inputs in --work: torch.json (torch_baseline.py), dit-<type>-<size>.json (bench_dit), prep.txt (conversion
and quantization times from bench.sh), img-<type>-256.npy (decoded images of the 256 px / 1 image sample,
for the q8_0-vs-f16 PSNR). Outputs in --work: results.json (everything merged) and RESULTS-append.md (the
section appended to --append under "## Measurements").

Compute floor (shared/reference/performance.md §1.2): FLOP per sampler step = 2 (FLOP per MAC) x 2 (CFG
batch) x MACs x images, MACs per image per forward = 118.6 G at 256 px and 524.5 G at 512 px; divided by the
GPU's dense bf16 peak (989.5 TFLOP/s for H100 SXM and H200; --peak overrides). "fraction of the floor" =
floor time / measured time.
"""
import argparse
import datetime
import json
import math
import os
import sys

MACS = {256: 118.6e9, 512: 524.5e9}


def peak_tflops(gpu):
    """Dense bf16 tensor-core peak of the GPU (datasheet), TFLOP/s, and a note when it is a guess."""
    g = gpu.upper()
    if "H100" in g and "PCIE" in g:
        return 756.0, ""
    if "H100" in g and "NVL" in g:
        return 835.0, ""
    if "H100" in g or "H200" in g or "H800" in g:
        return 989.5, ""
    return 989.5, " (peak of this GPU unknown to report.py: the H100 SXM figure is used)"


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt(v, nd=3):
    if v is None:
        return "—"
    if v >= 1000:
        return "%.0f" % v
    if v >= 100:
        return "%.1f" % v
    if v >= 10:
        return "%.2f" % v
    return "%.*f" % (nd, v)


def gather(work, merge):
    res = {"torch": {}, "dit": {}, "prep": {}}
    if merge:
        old = load_json(merge)
        if old:
            res["torch"] = old.get("torch", {})
            res["dit"] = old.get("dit", {})
            res["prep"] = old.get("prep", {})
            for k in ("psnr_q8_0_vs_f16_256", "psnr_steps", "psnr_note"):
                if k in old:
                    res[k] = old[k]
            res["merged_from"] = merge
    t = load_json(os.path.join(work, "torch.json"))
    if t:
        res["torch_meta"] = t.get("meta", {})
        for k, v in t.get("cases", {}).items():
            if "ms" in v or k not in res["torch"]:   # a fresh measurement wins; a fresh skip does not erase one
                res["torch"][k] = v
    for ty in ("f16", "q8_0"):
        for s in (256, 512):
            d = load_json(os.path.join(work, "dit-%s-%d.json" % (ty, s)))
            if d:
                res["dit"].setdefault(ty, {})[str(s)] = d
    try:
        with open(os.path.join(work, "prep.txt")) as f:
            for line in f:
                p = line.split()
                if len(p) == 4:
                    res["prep"][p[0]] = {"s": float(p[1]), "in_bytes": int(p[2]), "out_bytes": int(p[3])}
    except OSError:
        pass
    # the saved images come from the last timed sample of each run: comparable only with equal step counts
    a, b = dit_case(res, "f16", 256, 1), dit_case(res, "q8_0", 256, 1)
    fresh = os.path.exists(os.path.join(work, "img-f16-256.npy"))
    if not fresh:
        pass   # nothing new to compare (BENCH_COMPILE=only): keep what the merge file said
    elif a and b and a.get("saved_steps") and a.get("saved_steps") == b.get("saved_steps"):
        p = psnr(os.path.join(work, "img-f16-256.npy"), os.path.join(work, "img-q8_0-256.npy"))
        if p is not None:
            res["psnr_q8_0_vs_f16_256"] = p
            res["psnr_steps"] = a["saved_steps"]
    elif a and b:
        res["psnr_note"] = "not comparable: images of %s and %s steps" % (a.get("saved_steps"), b.get("saved_steps"))
    return res


def psnr(a_path, b_path):
    """PSNR in dB of image b against a, both in [-1, 1] (clamped), on the [0, 1] scale."""
    try:
        import numpy as np
        a = np.load(a_path).astype(np.float64)
        b = np.load(b_path).astype(np.float64)
    except Exception:
        return None
    if a.shape != b.shape:
        return None
    a = (np.clip(a, -1, 1) + 1) / 2
    b = (np.clip(b, -1, 1) + 1) / 2
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def dit_case(res, ty, size, n):
    d = res["dit"].get(ty, {}).get(str(size))
    if not d:
        return None
    for c in d.get("cases", []):
        if c.get("n") == n:
            return c
    return None


def torch_ms(res, name):
    c = res["torch"].get(name)
    return c.get("ms") if c else None


def torch_note(res, name):
    c = res["torch"].get(name)
    if not c:
        return "not run"
    return c.get("skipped") or c.get("error") or ""


def build(res, gpu, peak):
    """Returns (markdown lines, targets list)."""
    notes = []
    dagger = False

    def step_cell(ty, size, n):
        nonlocal dagger
        c = dit_case(res, ty, size, n)
        if not c:
            return None, "—"
        v = c["ms_step_median"]
        mark = ""
        if c["steps"] < c["steps_requested"]:
            mark = "†"
            dagger = True
        return v, fmt(v, 4) + mark

    def mem_cell(size, n):
        parts = []
        for ty in ("f16", "q8_0"):
            c = dit_case(res, ty, size, n)
            if c and c.get("mem_delta_bytes"):
                parts.append("%s %.2f" % (ty, c["mem_delta_bytes"] / 1e9))
        return (" / ".join(parts) + " GB") if parts else "—"

    rows = []
    header = ("| case | dit.c f16 | dit.c q8_0 | torch eager fp32+TF32 | torch.compile max-autotune bf16 | "
              "speedup vs compile (f16) | fraction of the compute floor (f16) | peak GPU memory (dit.c) |")
    rows.append(header)
    rows.append("|---|---|---|---|---|---|---|---|")
    floor_ms = {}
    for size, n, tname, cname in ((256, 1, "eager256x1", "compile256x1"), (256, 8, "eager256x8", "compile256x8"),
                                  (512, 1, "eager512x1", None)):
        f16, f16s = step_cell("f16", size, n)
        _, q8s = step_cell("q8_0", size, n)
        e = torch_ms(res, tname)
        cm = torch_ms(res, cname) if cname else None
        floor = 2 * 2 * MACS[size] * n / (peak * 1e12) * 1e3
        floor_ms[(size, n)] = floor
        sp = "%.2f×" % (cm / f16) if (cm and f16) else "—"
        fr = "%.1f%% (floor %.3f ms)" % (100 * floor / f16, floor) if f16 else "floor %.3f ms" % floor
        cms = fmt(cm) if cm else ("not measured" if not cname else "— (%s)" % torch_note(res, cname))
        rows.append("| %d px, %d image%s, ms/step | %s | %s | %s | %s | %s | %s | %s |" % (
            size, n, "s" if n > 1 else "", f16s, q8s, fmt(e), cms, sp, fr, mem_cell(size, n)))
    # whole 250-step sample, 256 px, 1 image
    cells = []
    f16w = None
    for ty in ("f16", "q8_0"):
        c = dit_case(res, ty, 256, 1)
        if not c:
            cells.append("—")
            continue
        if c["steps"] == 250:
            v = c["sample_ms_median"]
            cells.append(fmt(v))
        else:
            v = c["ms_step_median"] * 250
            cells.append("≈" + fmt(v) + "†")
            dagger = True
        if ty == "f16":
            f16w = v
    e = torch_ms(res, "loop256x1")
    cm = torch_ms(res, "loopc256x1")
    floor = 250 * floor_ms[(256, 1)]
    rows.append("| 256 px, 1 image, whole 250-step sample, ms | %s | %s | %s | %s | %s | %s | — |" % (
        cells[0], cells[1], fmt(e), fmt(cm) if cm else "— (%s)" % torch_note(res, "loopc256x1"),
        "%.2f×" % (cm / f16w) if (cm and f16w) else "—",
        "%.1f%% (floor %.0f ms)" % (100 * floor / f16w, floor) if f16w else "floor %.0f ms" % floor))
    # VAE
    dv = []
    for ty in ("f16", "q8_0"):
        c = dit_case(res, ty, 256, 1)
        dv.append(c.get("decode_ms") if c and c.get("decode_ms", -1) > 0 else None)
    ev = torch_ms(res, "vae256x1")
    rows.append("| VAE decode 256 px, 1 image, ms | %s | %s | %s | not measured | %s | — | — |" % (
        fmt(dv[0]), fmt(dv[1]), fmt(ev), "vs eager %.2f×" % (ev / dv[0]) if (ev and dv[0]) else "—"))
    if dagger:
        notes.append("† fewer than 250 steps were timed (time budget): per-step rate of a shorter DDPM schedule, "
                     "the whole-sample figure extrapolated to 250 steps.")
    return rows, notes, floor_ms


def targets(res):
    out = []

    def status(ok):
        return "met" if ok else "missed"

    f1 = dit_case(res, "f16", 256, 1)
    f8 = dit_case(res, "f16", 256, 8)
    f5 = dit_case(res, "f16", 512, 1)
    q5 = dit_case(res, "q8_0", 512, 1)
    q1 = dit_case(res, "q8_0", 256, 1)
    c1 = torch_ms(res, "compile256x1")
    c8 = torch_ms(res, "compile256x8")
    e1 = torch_ms(res, "eager256x1")
    nm = "not measured"
    if f1:
        v = f1["ms_step_median"]
        out.append("- [%s] 256 px, 1 image, f16: <= 1.0 ms/step — %.4f ms/step (%.3f s per image)" % (
            status(v <= 1.0), v, v * 0.25))
        out.append("- [%s] 256 px, 1 image: >= 5x faster per step than torch.compile max-autotune bf16 — %s" % (
            status(c1 / v >= 5) if c1 else nm, "%.2fx (%.3f vs %.4f ms)" % (c1 / v, c1, v) if c1 else torch_note(res, "compile256x1")))
        out.append("- [%s] 256 px, 1 image: >= 13x faster per step than eager — %s" % (
            status(e1 / v >= 13) if e1 else nm, "%.2fx" % (e1 / v) if e1 else torch_note(res, "eager256x1")))
    else:
        out.append("- [%s] 256 px, 1 image targets: dit.c f16 not measured" % nm)
    if f5:
        v = f5["ms_step_median"]
        out.append("- [%s] 512 px, 1 image, 1 GPU: <= 3.5 ms/step — %.4f ms/step" % (status(v <= 3.5), v))
    else:
        out.append("- [%s] 512 px, 1 image, 1 GPU: <= 3.5 ms/step" % nm)
    out.append("- [%s] 512 px, 1 image, 4 GPUs: <= 1.2 ms/step — make bench uses one GPU" % nm)
    if f8 and c8:
        r = c8 / f8["ms_step_median"]
        out.append("- [%s] 256 px, 8 images: >= 1.3x the images/s of torch.compile — %.2fx (%.2f vs %.2f images/s)" % (
            status(r >= 1.3), r, 8 / (f8["ms_step_median"] * 0.25), 8 / (c8 * 0.25)))
    else:
        out.append("- [%s] 256 px, 8 images: >= 1.3x the images/s of torch.compile — %s" % (
            nm, "dit.c not measured" if not f8 else "compile: " + torch_note(res, "compile256x8")))
    if f5 and q5:
        r = f5["ms_step_median"] / q5["ms_step_median"]
        out.append("- [%s] q8_0 >= 1.4x faster than f16 at 512 px — %.2fx" % (status(r >= 1.4), r))
    else:
        out.append("- [%s] q8_0 >= 1.4x faster than f16 at 512 px" % nm)
    p = res.get("psnr_q8_0_vs_f16_256")
    if p is not None:
        out.append("- [%s] q8_0 final images >= 30 dB PSNR against f16 — %.1f dB (256 px, 1 image, %d steps, "
                   "random weights: `make quality` judges real weights)" % (status(p >= 30), p, res.get("psnr_steps", 0)))
    else:
        out.append("- [%s] q8_0 final images >= 30 dB PSNR against f16%s" % (
            nm, " — " + res["psnr_note"] if res.get("psnr_note") else ""))
    dv = f1.get("decode_ms") if f1 else None
    if dv and dv > 0:
        out.append("- [%s] VAE decode 256 px, 1 image: <= 3 ms — %.3f ms (%s)" % (status(dv <= 3.0), dv, f1.get("decode_fn")))
    else:
        out.append("- [%s] VAE decode 256 px, 1 image: <= 3 ms" % nm)
    for ty, c, lim in (("f16", f1, 2.0), ("q8_0", q1, 1.3)):
        if c and c.get("mem_delta_bytes"):
            g = c["mem_delta_bytes"] / 1e9
            out.append("- [%s] peak GPU memory, 256 px, 1 image, %s: <= %.1f GB — %.3f GB (allocated by the process, "
                       "CUDA context excluded)" % (status(g <= lim), ty, lim, g))
        else:
            out.append("- [%s] peak GPU memory, 256 px, 1 image, %s: <= %.1f GB" % (nm, ty, lim))
    return out


def details(res):
    lines = []
    for key in ("256", "512"):
        cv = res["prep"].get("convert_" + key)
        qv = res["prep"].get("quantize_" + key)
        if cv:
            lines.append("- conversion %s px (checkpoint fp32 + VAE -> f16 GGUF): %.0f MB in %.1f s = %.0f MB/s; "
                         "q8_0 quantization: %s" % (key, cv["in_bytes"] / 1e6, cv["s"], cv["in_bytes"] / 1e6 / cv["s"],
                                                     "%.1f s, %.0f MB" % (qv["s"], qv["out_bytes"] / 1e6) if qv else "failed"))
    for name in ("compile256x1", "compile256x8"):
        c = res["torch"].get(name)
        if c and "compile_s" in c:
            lines.append("- torch.compile %s: compiled in %.0f s" % (name[7:], c["compile_s"]))
        elif c:
            lines.append("- torch.compile %s: %s" % (name[7:], c.get("skipped") or c.get("error")))
    for ty in ("f16", "q8_0"):
        for s in ("256", "512"):
            d = res["dit"].get(ty, {}).get(s)
            if not d:
                continue
            for c in d.get("cases", []):
                extra = ""
                if c.get("step_only_ms", -1) > 0:
                    extra = ", step alone %.4f ms, adaLN precompute %.2f ms" % (c["step_only_ms"], c["precompute_ms"])
                lines.append("- dit.c %s %s px n=%d: %.4f ms/step (median of %d x %d steps, min %.4f), %.2f images/s%s; "
                             "weights %s" % (ty, s, c["n"], c["ms_step_median"], c["reps"], c["steps"], c["ms_step_min"],
                                             c["images_per_s"], extra, d.get("weights", "?")))
    tm = res.get("torch_meta", {})
    if tm:
        lines.append("- PyTorch %s on %s (dit_ref.py modules, SDPA %s); eager = fp32 with TF32 as sample.py; "
                     "medians of %s %s calls after %s warm-up calls" % (
                         tm.get("torch"), tm.get("gpu", tm.get("device")), "on" if tm.get("sdpa") else "off",
                         tm.get("reps"), "CUDA-event-timed" if tm.get("device", "").startswith("cuda") else "timed",
                         tm.get("warmup")))
    lines.append("- dit.c ms/step = median wall time of whole `dit_sample` calls (noise upload, adaLN precompute, "
                 "latent download included) / steps; 250 DDPM steps, CFG 4.0, random-weight DiT-XL/2 "
                 "(bench/make_xl.py)")
    return lines


def append_results(path, section):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        text = "# Benchmarks\n"
    lines = text.split("\n")
    idx = next((i for i, l in enumerate(lines) if l.strip() == "## Measurements"), None)
    if idx is None:
        text = text.rstrip("\n") + "\n\n## Measurements\n\n" + section
    else:
        nxt = next((i for i in range(idx + 1, len(lines)) if lines[i].startswith("## ")), None)
        if nxt is None:
            text = text.rstrip("\n") + "\n\n" + section
        else:
            before = "\n".join(lines[:nxt]).rstrip("\n")
            text = before + "\n\n" + section + "\n" + "\n".join(lines[nxt:])
    tmp = path + ".tmp.%d" % os.getpid()
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="bench/.work")
    ap.add_argument("--gpu", default="unknown GPU")
    ap.add_argument("--driver", default="?")
    ap.add_argument("--cuda", default="?")
    ap.add_argument("--peak", type=float, default=float(os.environ.get("BENCH_PEAK_TFLOPS", "0") or 0),
                    help="dense bf16 peak TFLOP/s (default: from the GPU name)")
    ap.add_argument("--elapsed", type=float, default=0)
    ap.add_argument("--budget", type=float, default=0)
    ap.add_argument("--failed", default="")
    ap.add_argument("--append", help="RESULTS.md to append the section to")
    ap.add_argument("--merge", help="results.json of an earlier run: its entries fill what this run lacks")
    ap.add_argument("--out", help="folder for results.json and RESULTS-append.md (default: --work)")
    a = ap.parse_args()

    res = gather(a.work, a.merge)
    peak, peak_note = (a.peak, "") if a.peak else peak_tflops(a.gpu)
    res.update(gpu=a.gpu, driver=a.driver, cuda=a.cuda, peak_tflops=peak, elapsed_s=a.elapsed,
               date=datetime.date.today().isoformat())
    rows, notes, _ = build(res, a.gpu, peak)
    tg = targets(res)
    title = "### %s %s (driver %s, CUDA %s)" % (res["date"], a.gpu, a.driver, a.cuda)
    out = [title, ""]
    out += rows
    out += [""] + notes if notes else []
    out += ["", "Compute floor: 2 x 2 x MACs x images per step (MACs 118.6 G at 256 px, 524.5 G at 512 px) at "
            "%.1f TFLOP/s dense bf16%s. `make bench` took %.0f s (budget %.0f s)%s." % (
                peak, peak_note, a.elapsed, a.budget, "; merged with " + res["merged_from"] if "merged_from" in res else "")]
    if a.failed.strip("; "):
        out += ["", "Failures: " + a.failed.strip("; ")]
    out += ["", "Targets (shared/reference/performance.md):", ""] + tg
    out += ["", "Details:", ""] + details(res) + [""]
    section = "\n".join(out)
    print(section)
    out_dir = a.out or a.work
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    with open(os.path.join(out_dir, "RESULTS-append.md"), "w") as f:
        f.write(section)
    if a.append:
        append_results(a.append, section)
        print("report: appended to %s" % a.append, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
