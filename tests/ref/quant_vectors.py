"""quant_vectors.py -- independent test vectors for dit.c's fp16/bf16 conversions and ggml block quantizers.

Writes tests/fixtures/quant/ (read by tests/test_quant.c; the format is described in
tests/fixtures/quant/README.md). Run from the repo root:

    /usr/bin/python3 tests/ref/quant_vectors.py [OUTDIR]

Everything here is computed with numpy from the documented formulas
(shared/reference/gguf-and-ecosystem.md §1.6 and ggml-quants.c *_ref, as restated below), not from dit.c.
Every float operation is a separate, correctly rounded float32 operation (np.float32 arrays, no float64
shortcuts, no fused multiply-add), in the order ggml's C reference performs them:

  q8_0  amax = max|x|;  d = amax / 127;  id = d != 0 ? 1.0f / d : 0;  q = roundf(x * id)
        roundf = round half AWAY from zero (np.round is half-to-even: not used).
        block = fp16(d) | int8 q[32]                                                    (34 bytes)
  q4_0  max = the signed x with the largest |x| (first one wins on equal |x|, strict '<' scan from 0)
        d = max / -8;  id = d != 0 ? 1.0f / d : 0;  q = min(15, (int8)(x * id + 8.5f))   ((int8) truncates)
        block = fp16(d) | qs[16], qs[j] = q[j] | q[j+16] << 4                              (18 bytes)
  q5_0  as q4_0 with d = max / -16, q = min(31, (int8)(x * id + 16.5f));
        qs[j] = (q[j] & 15) | (q[j+16] & 15) << 4;  qh (little-endian u32) bit j = q[j] >> 4, bit j+16 = q[j+16] >> 4
        block = fp16(d) | qh[4] | qs[16]                                                   (22 bytes)
  dequant: y = (float)q' * fp16_to_fp32(d), q' = q (q8_0), q - 8 (q4_0), q - 16 (q5_0);
           q4_1/q5_1: y = (float)q * d + m as two float32 roundings (multiply, then add; no FMA).
  fp16  IEEE binary16, round to nearest even, overflow to inf (numpy astype(float16)).
  bf16  ggml rule: NaN -> (u >> 16) | 64; else (u + 0x7fff + ((u >> 16) & 1)) >> 16.

Two x*id + 8.5 subtleties are covered on purpose:
  * the float32 sum can round up to the next integer (x*id = 0.49999997 -> 8.99999997 -> 9.0f -> q = 9);
  * a fused multiply-add (cc -ffp-contract=fast on FMA hardware) gives a different q for some inputs:
    blocks named "fma_sensitive_*" fail if the C compiler contracts x*id + 8.5f into one rounding.

Blocks on which ggml's reference itself is undefined behaviour (NaN or inf in the block, or 1/d overflowing
to inf for tiny blocks, so that x*id is NaN/inf and the (int8) conversion is UB) are not in the bit-exact
set: they go to special.f32 and test_quant.c only requires no crash and the documented output.
"""
import os
import sys
from fractions import Fraction

import numpy as np

F32 = np.float32


def f32(v):
    return np.asarray(v, dtype=np.float32)


# ------------------------------------------------------------------------------------------- fp16 / bf16
def fp32_to_fp16_bits(x):
    with np.errstate(over="ignore"):  # overflow to inf is the rule
        return f32(x).astype(np.float16).view(np.uint16)


def fp16_bits_to_fp32(h):
    return np.asarray(h, dtype=np.uint16).view(np.float16).astype(np.float32)


def fp32_to_bf16_bits(x):
    u = f32(x).view(np.uint32).astype(np.uint64)
    isnan = np.isnan(f32(x))
    rne = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    nan = ((u >> 16) | 64) & 0xFFFF
    return np.where(isnan, nan, rne).astype(np.uint16)


def bf16_bits_to_fp32(h):
    return (np.asarray(h, dtype=np.uint32) << 16).view(np.float32)


# ------------------------------------------------------------------------------------------- helpers
def roundf(v):
    """C roundf on float32 values: half away from zero, exact (via float64, where trunc and the
    difference are exact for float32 inputs)."""
    v = np.asarray(v, dtype=np.float64)
    t = np.trunc(v)
    frac = v - t
    return np.where(np.abs(frac) >= 0.5, t + np.sign(v), t)


def trunc_to_int(v):
    """(int8_t) conversion of finite float32 values that are in range: truncation toward zero."""
    return np.trunc(np.asarray(v, dtype=np.float64)).astype(np.int64)


def block_max(xb):
    """q4_0/q5_0 scan: amax = 0, max = 0; for j: if (amax < |x_j|) { amax = |x_j|; max = x_j; }"""
    amax, mx = F32(0), F32(0)
    for v in xb:
        if amax < abs(v):  # NaN never wins (comparison false)
            amax, mx = abs(v), v
    return mx


def inv(d):
    """id = d ? 1.0f/d : 0.0f in float32"""
    with np.errstate(over="ignore", divide="ignore"):
        return F32(1.0) / d if d != 0 else F32(0.0)


# ------------------------------------------------------------------------------------------- quantizers
def q8_0_block(xb):
    xb = f32(xb)
    with np.errstate(invalid="ignore"):
        amax = F32(0)
        for v in xb:  # MAX(amax, fabsf(v)) as ggml: (a > b ? a : b)
            av = abs(v)
            amax = amax if amax > av else av
    d = F32(amax / F32(127))
    idv = inv(d)
    with np.errstate(over="ignore", invalid="ignore"):
        xs = (xb * idv).astype(np.float32)
    if not np.all(np.isfinite(xs)) or not np.isfinite(d):
        return None  # UB in ggml's reference (NaN/inf reaches the int8 conversion)
    q = roundf(xs).astype(np.int64)
    assert np.all(np.abs(q) <= 127), q
    return fp32_to_fp16_bits(d).tobytes() + q.astype(np.int8).tobytes()


def q4_0_block(xb, nbits=4):
    xb = f32(xb)
    half = F32(8.5) if nbits == 4 else F32(16.5)
    qmax = 15 if nbits == 4 else 31
    mx = block_max(xb)
    d = F32(mx / F32(-8 if nbits == 4 else -16))
    idv = inv(d)
    with np.errstate(over="ignore", invalid="ignore"):
        xs = (xb * idv).astype(np.float32)
        s = (xs + half).astype(np.float32)
    if not np.all(np.isfinite(s)) or not np.isfinite(d):
        return None
    q = trunc_to_int(s)
    assert np.all((q >= 0) & (q <= qmax + 1)), q
    q = np.minimum(qmax, q)
    lo, hi = q[:16], q[16:]
    if nbits == 4:
        qs = (lo | (hi << 4)).astype(np.uint8)
        return fp32_to_fp16_bits(d).tobytes() + qs.tobytes()
    qs = ((lo & 15) | ((hi & 15) << 4)).astype(np.uint8)
    qh = 0
    for j in range(16):
        qh |= int(lo[j] >> 4) << j
        qh |= int(hi[j] >> 4) << (j + 16)
    return fp32_to_fp16_bits(d).tobytes() + np.uint32(qh).tobytes() + qs.tobytes()


def q5_0_block(xb):
    return q4_0_block(xb, nbits=5)


QUANT = {"q8_0": q8_0_block, "q4_0": q4_0_block, "q5_0": q5_0_block}
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q5_0": 22, "q4_1": 20, "q5_1": 24}


def dequant_block(t, b):
    d = fp16_bits_to_fp32(np.frombuffer(b[0:2], np.uint16))[0]
    if t == "q8_0":
        q = np.frombuffer(b[2:34], np.int8).astype(np.float32)
        m = F32(0)
    elif t in ("q4_0", "q4_1"):
        off = 4 if t == "q4_1" else 2
        qs = np.frombuffer(b[off:off + 16], np.uint8).astype(np.int64)
        q = np.concatenate([qs & 15, qs >> 4])
        q = (q - (8 if t == "q4_0" else 0)).astype(np.float32)
        m = fp16_bits_to_fp32(np.frombuffer(b[2:4], np.uint16))[0] if t == "q4_1" else F32(0)
    else:  # q5_0, q5_1
        off = 4 if t == "q5_1" else 2
        qh = int(np.frombuffer(b[off:off + 4], np.uint32)[0])
        qs = np.frombuffer(b[off + 4:off + 20], np.uint8).astype(np.int64)
        hb = np.array([(qh >> j) & 1 for j in range(32)], np.int64)
        q = np.concatenate([qs & 15, qs >> 4]) | (hb << 4)
        q = (q - (16 if t == "q5_0" else 0)).astype(np.float32)
        m = fp16_bits_to_fp32(np.frombuffer(b[2:4], np.uint16))[0] if t == "q5_1" else F32(0)
    with np.errstate(invalid="ignore", over="ignore"):
        y = (q * d).astype(np.float32)
        if t in ("q4_1", "q5_1"):
            y = (y + m).astype(np.float32)  # separate rounding: multiply, then add
    return y


# ------------------------------------------------------------------------------------------- block sets
def make_blocks(rng):
    """Returns a list of (name, blocks[nb, 32] float32). Names are unique and listed in cases.txt."""
    cases = []

    def add(name, arr):
        arr = f32(arr).reshape(-1, 32)
        cases.append((name, arr))

    add("zeros", np.zeros(32))
    add("neg_zeros", -np.zeros(32))
    add("one_nonzero_first", np.r_[1.0, np.zeros(31)])
    add("one_nonzero_last", np.r_[np.zeros(31), -3.0])
    add("constant_pos", np.full(32, 0.75))
    add("constant_neg", np.full(32, -0.75))
    add("ramp", np.arange(32) - 15.5)
    add("ramp_neg", -(np.arange(32) - 15.5))
    add("pow2_ramp", (np.arange(32) - 16) / 16.0)
    # exact ties: d (and so id) a power of two, x*id = k + 0.5 exactly
    # q8_0: amax = 127 * 2^-4 -> d = 2^-4, id = 16; x = (k+0.5)/16 -> x*id = k + 0.5, roundf away from zero
    k = np.arange(-15, 16)
    add("q8_0_ties", np.r_[127.0 / 16, (k + 0.5) / 16])
    add("q8_0_ties_neg_max", np.r_[(k + 0.5) / 16, -127.0 / 16])
    # q4_0: max = 8 * 2^-3 = 1 -> d = -1/8, id = -8; x = -(k+0.5)/8 -> x*id = k + 0.5 -> +8.5 exact integer
    k4 = np.arange(-8, 8)
    add("q4_0_ties", np.r_[1.0, -(k4 + 0.5) / 8, (k4[::-1] + 0.5) / 8, np.zeros(15)][:32])
    # q5_0: max = 16 * 2^-4 = 1 -> d = -1/16, id = -16
    k5 = np.arange(-16, 15)
    add("q5_0_ties", np.r_[1.0, -(k5 + 0.5) / 16])
    # x*id + 8.5 rounding up to the next integer in float32: x*id = 0.49999997f
    add("sum_rounds_up", np.r_[-8.0, np.full(31, -np.float32(0.49999997))])
    # equal |x| of opposite signs: the first one sets max (and the sign of d)
    add("max_tie_pos_first", np.r_[0.5, np.zeros(10), -0.5, np.linspace(-0.3, 0.3, 20)])
    add("max_tie_neg_first", np.r_[-0.5, np.zeros(10), 0.5, np.linspace(-0.3, 0.3, 20)])
    # max element at the end and in the middle, both signs
    b = rng.normal(0, 1, 32); b[31] = 5.0
    add("max_last_pos", b)
    b = rng.normal(0, 1, 32); b[16] = -5.0
    add("max_mid_neg", b)
    # clamped element: -max maps to +8 (+16) -> 16.5 (32.5) -> 16 (32) -> clamped to 15 (31)
    add("clamp_opposite_of_max", np.r_[2.0, -2.0, rng.normal(0, 0.5, 30)])
    # fp16 scale edges: d in fp16 subnormal range, d rounding to fp16 zero, d overflowing fp16 to inf
    add("d_fp16_subnormal", rng.normal(0, 1e-5, 32))
    add("d_fp16_zero", rng.normal(0, 1e-9, 32))
    add("d_fp16_min_normal", np.r_[127 * 6.103515625e-05, rng.uniform(-1e-3, 1e-3, 31)])
    add("d_fp16_max", np.r_[127 * 65504.0, rng.uniform(-65504, 65504, 31)])
    add("d_fp16_overflow", np.r_[1e7, rng.normal(0, 1e6, 31)])
    add("huge", np.r_[3.4e38, -3.4e38, rng.uniform(-3e38, 3e38, 30)])
    add("huge_flt_max", np.r_[np.finfo(np.float32).max, np.zeros(31)])
    # float32 denormal inputs that keep 1/d finite: a normal max with denormal neighbours,
    # and denormal-only blocks just above the 1/d overflow limit (d >= 2^-127 for every type)
    add("denormal_neighbours", np.r_[1.0, rng.uniform(-1, 1, 31) * 1e-39])
    add("denormal_with_small_normal", np.r_[1e-30, rng.uniform(-1, 1, 31) * 1e-40])
    add("small_normal", rng.normal(0, 1e-36, 32))
    add("d_underflow_min_denormal", np.r_[np.float32(1e-45), np.zeros(31)])  # d = 0 -> id = 0
    add("d_underflow_denormals", np.r_[np.array([4, 0x80000003, 1, 2], np.uint32).view(np.float32), np.zeros(28)])  # 4 ulp / 8 = tie -> 0
    add("denormal_max_ok", np.r_[127 * 2.0**-127 * 1.0, rng.uniform(-1, 1, 31) * 1e-40])
    # realistic weights
    for i in range(8):
        add(f"normal_{i}", rng.normal(0, 0.02, 32))
    add("normal_many", rng.normal(0, 0.02, 32 * 64))
    add("normal_unit", rng.normal(0, 1.0, 32 * 16))
    add("student_t3", rng.standard_t(3, 32 * 32) * 0.02)
    add("laplace", rng.laplace(0, 0.01, 32 * 16))
    add("outlier_rows", np.where(rng.uniform(size=32 * 16) < 0.02, 30.0, 1.0) * rng.normal(0, 0.02, 32 * 16))
    add("uniform", rng.uniform(-1, 1, 32 * 16))
    # random float32 bit patterns with a finite, bounded exponent range
    bits = rng.integers(0, 2**32, 32 * 16, dtype=np.uint64).astype(np.uint32)
    v = bits.view(np.float32)
    v = np.where(np.isfinite(v) & (np.abs(v) < 1e30) & (np.abs(v) > 1e-30), v, F32(0.5))
    add("random_bits", v)
    return cases


def round_to_f32(q):
    """Correctly rounded float32 of a positive or negative Fraction (normal range), ties to even."""
    if q == 0:
        return F32(0)
    sign = -1 if q < 0 else 1
    a = abs(q)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    scaled = a / Fraction(2) ** (e - 23)  # in [2^23, 2^24)
    n = scaled.numerator // scaled.denominator
    r = scaled - n
    if r > Fraction(1, 2) or (r == Fraction(1, 2) and n % 2 == 1):
        n += 1
    return F32(sign * float(Fraction(n) * Fraction(2) ** (e - 23)))


def fma_sensitive(rng, nbits, want=4):
    """Blocks whose element x gives a different (int8) truncation for the separately rounded
    fl(fl(x*id) + c) (ggml's C reference) and for a fused multiply-add round(x*id + c)."""
    c = F32(8.5) if nbits == 4 else F32(16.5)
    div = F32(-8) if nbits == 4 else F32(-16)
    found = []
    for _ in range(200000):
        if len(found) >= want:
            break
        mx = F32(rng.uniform(0.5, 2.0))
        d = F32(mx / div)
        idv = F32(F32(1.0) / d)
        # x*id + c close to a small integer n, where the sum's binade is finer than x*id's
        target = F32(rng.integers(1, 5) - c)
        x0 = F32(target / idv)
        xs = [x0]
        for direction in (np.inf, -np.inf):
            xx = x0
            for _ in range(4):
                xx = np.nextafter(xx, F32(direction), dtype=np.float32)
                xs.append(xx)
        for xx in xs:
            if abs(xx) >= abs(mx):
                continue
            p = F32(xx * idv)
            unfused = int(np.trunc(np.float64(F32(p + c))))
            fused = int(np.trunc(np.float64(round_to_f32(Fraction(float(xx)) * Fraction(float(idv)) + Fraction(float(c))))))
            if unfused != fused:
                found.append(np.r_[mx, np.full(31, xx)])
                break
    assert len(found) == want, f"only {len(found)} fma-sensitive blocks found for q{nbits}_0"
    return found


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join("tests", "fixtures", "quant")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20240611)

    # ---- q8_0 / q4_0 / q5_0 bit-exact blocks
    cases = make_blocks(rng)
    for nbits in (4, 5):
        for i, blk in enumerate(fma_sensitive(rng, nbits)):
            cases.append((f"fma_sensitive_q{nbits}_0_{i}", f32(blk).reshape(1, 32)))
    allx, lines, nb = [], [], 0
    for name, arr in cases:
        for t, fn in QUANT.items():
            for b in arr:
                assert fn(b) is not None, (name, t)
        lines.append(f"{nb} {len(arr)} {name}")
        allx.append(arr)
        nb += len(arr)
    X = np.concatenate(allx).astype(np.float32)
    X.tofile(os.path.join(out, "blocks.f32"))
    for t, fn in QUANT.items():
        q = b"".join(fn(b) for b in X)
        assert len(q) == len(X) * BLOCK_BYTES[t]
        with open(os.path.join(out, f"blocks.{t}"), "wb") as f:
            f.write(q)
        y = np.concatenate([dequant_block(t, q[i * BLOCK_BYTES[t]:(i + 1) * BLOCK_BYTES[t]]) for i in range(len(X))])
        y.astype(np.float32).tofile(os.path.join(out, f"blocks.{t}.deq"))
    with open(os.path.join(out, "cases.txt"), "w") as f:
        f.write("# first_block n_blocks name   (blocks of 32 float32 in blocks.f32)\n")
        f.write("\n".join(lines) + "\n")

    # ---- special blocks: ggml's reference is UB on them; only "no crash + documented output" is tested
    sp, splines = [], []
    nan, inf = np.float32(np.nan), np.float32(np.inf)

    def addsp(name, arr):
        splines.append(f"{len(sp)} 1 {name}")
        sp.append(f32(arr))
    addsp("nan_first", np.r_[nan, rng.normal(0, 1, 31)])
    addsp("nan_last", np.r_[rng.normal(0, 1, 31), nan])
    addsp("all_nan", np.full(32, nan))
    addsp("pos_inf", np.r_[rng.normal(0, 1, 15), inf, rng.normal(0, 1, 16)])
    addsp("neg_inf", np.r_[rng.normal(0, 1, 15), -inf, rng.normal(0, 1, 16)])
    addsp("inf_and_nan", np.r_[inf, nan, -inf, rng.normal(0, 1, 29)])
    addsp("tiny_denormal", rng.uniform(-1, 1, 32) * 1e-39)      # d != 0 but 1/d overflows to inf
    addsp("tiny_normal_q8", np.r_[1e-37, rng.uniform(-1, 1, 31) * 1e-38])  # q8_0: d = 7.9e-40, 1/d = inf
    for blk in sp:  # confirm that each special block is UB for at least one type in ggml's reference
        assert any(fn(blk) is None for fn in QUANT.values())
    np.stack(sp).astype(np.float32).tofile(os.path.join(out, "special.f32"))
    with open(os.path.join(out, "special.txt"), "w") as f:
        f.write("# block name   (blocks of 32 float32 in special.f32; ggml's reference is UB on these)\n")
        f.write("\n".join(splines) + "\n")

    # ---- q4_1 / q5_1 dequantization (dit.c only dequantizes these)
    for t in ("q4_1", "q5_1"):
        blks = []
        for i in range(64):
            d = fp32_to_fp16_bits(F32(rng.normal(0, 0.01)))
            m = fp32_to_fp16_bits(F32(rng.normal(0, 0.1)))
            body = rng.integers(0, 256, BLOCK_BYTES[t] - 4, dtype=np.uint8).tobytes()
            blks.append(d.tobytes() + m.tobytes() + body)
        q = b"".join(blks)
        with open(os.path.join(out, f"{t}.blocks"), "wb") as f:
            f.write(q)
        y = np.concatenate([dequant_block(t, b) for b in blks])
        y.astype(np.float32).tofile(os.path.join(out, f"{t}.deq"))

    # ---- fp16: f32 -> fp16 bits (RNE); edge cases + random bit patterns (NaN excluded: see README)
    e = []
    for ex in range(-27, 17):  # every binade around the fp16 range, ties and near-ties
        base = 2.0**ex
        for m in (1.0, 1.5, 1 + 2**-10, 1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-11 + 2**-20, 1 + 2**-11 - 2**-20, 2 - 2**-12):
            e += [base * m, -base * m]
    e += [0.0, -0.0, np.inf, -np.inf, 65504.0, 65519.0, 65519.996, 65520.0, 65536.0, 1e10, 3.4e38,
          2.0**-24, 2.0**-25, 2.0**-25 * (1 + 2**-20), 3 * 2.0**-25, 5 * 2.0**-25, 2.0**-26, 2.0**-14,
          2.0**-14 - 2.0**-25, 2.0**-14 - 2.0**-24, 1e-45, 1e-40]
    fin = f32(e)
    rb = rng.integers(0, 2**32, 8000, dtype=np.uint64).astype(np.uint32)
    # concentrate the random bit patterns around the fp16 range: exponent 100..150
    rb = (rb & np.uint32(0x807FFFFF)) | (rng.integers(100, 151, 8000).astype(np.uint32) << np.uint32(23))
    fin = np.concatenate([fin, rb.view(np.float32), f32(rng.normal(0, 1, 2000))])
    assert not np.any(np.isnan(fin))
    fin.tofile(os.path.join(out, "fp16.f32"))
    fp32_to_fp16_bits(fin).tofile(os.path.join(out, "fp16.u16"))

    # ---- bf16: f32 -> bf16 bits (ggml rule incl. NaN), independent cross-check with torch when present
    e = [0.0, -0.0, np.inf, -np.inf, 1.0, 1 + 2**-8, 1 + 2**-8 + 2**-20, 1 + 3 * 2**-8, 1 + 2**-9,
         3.4e38, np.finfo(np.float32).max, 1e-45, 1e-40, 1.17549435e-38]
    bfin = np.concatenate([f32(e), rng.integers(0, 2**32, 8000, dtype=np.uint64).astype(np.uint32).view(np.float32)])
    bfin = f32(bfin)
    nanbits = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x7F80FFFF], np.uint32)
    bfin = np.concatenate([bfin, nanbits.view(np.float32)])
    bfin.tofile(os.path.join(out, "bf16.f32"))
    bf = fp32_to_bf16_bits(bfin)
    bf.tofile(os.path.join(out, "bf16.u16"))
    try:
        import torch
        tb = torch.from_numpy(bfin.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        ok = np.isnan(bfin) | (tb == bf)
        assert ok.all(), "bf16 disagrees with torch on non-NaN values"
        print("bf16: torch cross-check ok")
    except ImportError:
        print("bf16: torch not available, cross-check skipped")
    # fp16 cross-check with torch as well
    try:
        import torch
        th = torch.from_numpy(fin.copy()).to(torch.float16).view(torch.int16).numpy().view(np.uint16)
        assert (th == fp32_to_fp16_bits(fin)).all(), "fp16 disagrees with torch"
        print("fp16: torch cross-check ok")
    except ImportError:
        pass

    print(f"{out}: {len(X)} blocks in {len(cases)} cases, {len(sp)} special blocks, "
          f"{len(fin)} fp16 values, {len(bfin)} bf16 values")


if __name__ == "__main__":
    main()
