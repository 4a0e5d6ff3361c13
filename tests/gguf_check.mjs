// gguf_check.mjs - an independent check of GGUF files written by dit.c, with the npm package
// @huggingface/gguf (a parser that shares no code with ours), plus our own layout checks.
//
//   node tests/gguf_check.mjs DIT_INFO FILE.gguf...          per file: parse, layout checks, compare with
//                                                            `DIT_INFO --json FILE` (KVs, tensor table)
//   node tests/gguf_check.mjs --safetensors ST PREFIX FILE   every tensor of the safetensors file ST (encoder
//                                                            and quant_conv skipped) must be in FILE under
//                                                            PREFIX+name with the same bits, or the exact
//                                                            f32 value of an f16/bf16/f64 source
// Prints TAP lines; exits 1 if anything failed. Without the package: one "ok - ... # SKIP reason" line.
import { execFileSync } from "node:child_process";
import { closeSync, openSync, readSync, statSync } from "node:fs";

let failed = 0;
const ok = (what) => console.log(`ok - ${what}`);
const notOk = (what, why) => { console.log(`not ok - ${what}: ${why}`); failed++; };

let gguf;
try {
    ({ gguf } = await import("@huggingface/gguf"));
} catch (e) {
    console.log(`ok - gguf_check # SKIP @huggingface/gguf cannot be loaded: ${String(e.message || e).split("\n")[0]}`);
    process.exit(0);
}

// ggml types: id -> [name, elements per block, bytes per block] (ggml.h ids, ggml-common.h block structs)
const TYPES = {
    0: ["f32", 1, 4], 1: ["f16", 1, 2], 2: ["q4_0", 32, 18], 3: ["q4_1", 32, 20], 6: ["q5_0", 32, 22],
    7: ["q5_1", 32, 24], 8: ["q8_0", 32, 34], 9: ["q8_1", 32, 36], 10: ["q2_K", 256, 84], 11: ["q3_K", 256, 110],
    12: ["q4_K", 256, 144], 13: ["q5_K", 256, 176], 14: ["q6_K", 256, 210], 15: ["q8_K", 256, 292],
    24: ["i8", 1, 1], 25: ["i16", 1, 2], 26: ["i32", 1, 4], 27: ["i64", 1, 8], 28: ["f64", 1, 8], 30: ["bf16", 1, 2],
};
const KV_TYPES = ["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64"];
const PAD = (x, a) => ((x + a - 1n) / a) * a;

function readBytes(path, start, n) {
    const fd = openSync(path, "r");
    try {
        const b = Buffer.alloc(n);
        let got = 0;
        while (got < n) {
            const k = readSync(fd, b, got, n - got, start + got);
            if (k === 0) throw new Error(`${path}: short read at ${start + got}`);
            got += k;
        }
        return b;
    } finally {
        closeSync(fd);
    }
}

// value from `dit-info --json` vs the package's typed value
function sameValue(type, sub, mine, theirs) {
    if (mine !== null && typeof mine === "object" && !Array.isArray(mine)) return null;   // {"text"}: not typed
    const one = (t, a, b) => {
        if (t === 6) return Math.fround(Number(a)) === Number(b);                          // f32: %.9g round-trips
        if (t === 7) return a === b;
        if (t === 8) return a === b;
        return BigInt(a) === BigInt(b);
    };
    if (type === 9) {
        if (!Array.isArray(mine) || !Array.isArray(theirs) || mine.length !== theirs.length) return false;
        return mine.every((x, i) => one(sub, x, theirs[i]));
    }
    return one(type, mine, theirs);
}

async function checkFile(info, path) {
    const what = `gguf_check ${path}`;
    let r;
    try {
        r = await gguf(path, { allowLocalFile: true, typedMetadata: true });
    } catch (e) {
        return notOk(what, `@huggingface/gguf could not parse it: ${e.message || e}`);
    }
    const size = BigInt(statSync(path).size);
    const tm = r.typedMetadata;
    const errs = [];
    // alignment: general.alignment (u32, power of two) or 32
    let A = 32n;
    if ("general.alignment" in tm) {
        if (tm["general.alignment"].type !== 4) errs.push("general.alignment is not a u32");
        A = BigInt(tm["general.alignment"].value);
        if (A === 0n || (A & (A - 1n)) !== 0n) errs.push(`alignment ${A} is not a power of two`);
    }
    const dataOff = BigInt(r.tensorDataOffset);
    if (dataOff % A !== 0n) errs.push(`data offset ${dataOff} is not a multiple of ${A}`);
    if (dataOff !== PAD(BigInt(r.tensorInfoByteRange[1]), A)) errs.push(`data offset ${dataOff} != PAD(end of tensor infos)`);
    // tensors: known type, ne0 % block == 0, offsets = running padded sum, data inside the file
    let running = 0n;
    const mine = [];
    for (const t of r.tensorInfos) {
        const ty = TYPES[t.dtype];
        if (!ty) { errs.push(`tensor ${t.name}: unknown type ${t.dtype}`); continue; }
        const [, blck, bytes] = ty;
        const ne = t.shape.map(BigInt);
        if (ne[0] % BigInt(blck) !== 0n) errs.push(`tensor ${t.name}: ne0 ${ne[0]} is not a multiple of ${blck}`);
        let nbytes = (ne[0] / BigInt(blck)) * BigInt(bytes);
        for (let d = 1; d < ne.length; d++) nbytes *= ne[d];
        const off = BigInt(t.offset);
        if (off % A !== 0n) errs.push(`tensor ${t.name}: offset ${off} is not a multiple of ${A}`);
        if (off !== running) errs.push(`tensor ${t.name}: offset ${off}, expected ${running} (running PAD rule)`);
        if (dataOff + off + nbytes > size) errs.push(`tensor ${t.name}: data ends past the file end`);
        running += PAD(nbytes, A);
        mine.push({ name: t.name, type_id: t.dtype, ne: ne.map(Number), nbytes: Number(nbytes), offset: Number(off) });
    }
    if (dataOff + running !== size) errs.push(`file size ${size} != data offset + padded data ${dataOff + running}`);
    // dit-info's view of the same file
    let di;
    try {
        di = JSON.parse(execFileSync(info, ["--json", path], { maxBuffer: 1 << 28 }).toString());
    } catch (e) {
        return notOk(what, `${info} --json failed: ${e.message || e}`);
    }
    if (BigInt(di.data_offset) !== dataOff) errs.push(`dit-info data offset ${di.data_offset} != ${dataOff}`);
    if (BigInt(di.alignment) !== A) errs.push(`dit-info alignment ${di.alignment} != ${A}`);
    if (BigInt(di.file_size) !== size) errs.push(`dit-info file size ${di.file_size} != ${size}`);
    if (di.version !== r.metadata.version) errs.push(`version ${di.version} != ${r.metadata.version}`);
    const theirKeys = Object.keys(tm).filter((k) => !["version", "tensor_count", "kv_count"].includes(k));
    if (BigInt(r.metadata.kv_count) !== BigInt(theirKeys.length)) errs.push("kv_count does not match the parsed KVs");
    if (di.kv.length !== theirKeys.length) errs.push(`dit-info lists ${di.kv.length} KVs, the package ${theirKeys.length}`);
    let typed = 0;
    di.kv.forEach((kv, i) => {
        const t = tm[kv.key];
        if (theirKeys[i] !== kv.key) errs.push(`KV ${i}: dit-info says ${kv.key}, the package ${theirKeys[i]}`);
        if (!t) return errs.push(`KV ${kv.key} missing in the package's parse`);
        if (KV_TYPES[t.type] !== kv.type) errs.push(`KV ${kv.key}: type ${kv.type} vs ${KV_TYPES[t.type]}`);
        if (t.type === 9 && (KV_TYPES[t.subType] !== kv.arr_type || t.value.length !== kv.n))
            errs.push(`KV ${kv.key}: array ${kv.arr_type}[${kv.n}] vs ${KV_TYPES[t.subType]}[${t.value.length}]`);
        const s = sameValue(t.type, t.subType, kv.value, t.value);
        if (s === false) errs.push(`KV ${kv.key}: value ${JSON.stringify(kv.value).slice(0, 80)} vs ${String(t.value).slice(0, 80)}`);
        if (s) typed++;
    });
    if (di.tensors.length !== mine.length) errs.push(`dit-info lists ${di.tensors.length} tensors, the package ${mine.length}`);
    di.tensors.forEach((t, i) => {
        const m = mine[i];
        if (!m) return;
        for (const k of ["name", "type_id", "nbytes", "offset"])
            if (t[k] !== m[k]) errs.push(`tensor ${i} ${m.name}: ${k} ${t[k]} (dit-info) vs ${m[k]}`);
        if (JSON.stringify(t.ne) !== JSON.stringify(m.ne)) errs.push(`tensor ${m.name}: ne ${t.ne} vs ${m.ne}`);
        if (TYPES[t.type_id] && TYPES[t.type_id][0] !== t.type) errs.push(`tensor ${m.name}: type name ${t.type}`);
    });
    if (errs.length) return notOk(what, errs.slice(0, 5).join("; ") + (errs.length > 5 ? ` (+${errs.length - 5} more)` : ""));
    ok(`${what}: ${theirKeys.length} KVs (${typed} values compared) and ${mine.length} tensors agree with dit-info; ` +
       `alignment ${A}, offsets and sizes consistent`);
}

// ---- safetensors source vs GGUF tensor bytes (an independent safetensors reader: JSON.parse)
function f16ToF32(h) {
    const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
    if (e === 0) return s * m * 2 ** -24;
    if (e === 31) return m ? NaN : s * Infinity;
    return s * (1 + m / 1024) * 2 ** (e - 15);
}

async function checkSafetensors(st, prefix, path) {
    const what = `safetensors ${st} -> ${path} bit-exact`;
    const n = Number(readBytes(st, 0, 8).readBigUInt64LE(0));
    const header = JSON.parse(readBytes(st, 8, n).toString("utf8"));
    const r = await gguf(path, { allowLocalFile: true });
    const byName = new Map(r.tensorInfos.map((t) => [t.name, t]));
    const dataOff = Number(r.tensorDataOffset);
    const errs = [];
    let count = 0;
    for (const [name, e] of Object.entries(header)) {
        if (name === "__metadata__" || name.startsWith("encoder.") || name.startsWith("quant_conv.")) continue;
        let gname = prefix + name;
        gname = gname.replace(/\.query\./, ".to_q.").replace(/\.key\./, ".to_k.").replace(/\.value\./, ".to_v.")
                     .replace(/\.proj_attn\./, ".to_out.0.");
        const t = byName.get(gname);
        if (!t) { errs.push(`${gname} missing`); continue; }
        const [b, en] = e.data_offsets;
        const src = readBytes(st, 8 + n + b, en - b);
        const ty = TYPES[t.dtype];
        let numel = 1;
        for (const d of t.shape) numel *= Number(d);
        const dst = readBytes(path, dataOff + Number(t.offset), (numel / ty[1]) * ty[2]);
        const srcType = { F32: 0, F16: 1, BF16: 30, F64: 28 }[e.dtype];
        if (srcType === t.dtype) {
            if (!src.equals(dst)) errs.push(`${gname}: bytes differ`);
        } else if (t.dtype === 0) {
            for (let i = 0; i < numel; i++) {
                const want = e.dtype === "F16" ? f16ToF32(src.readUInt16LE(2 * i))
                    : e.dtype === "BF16" ? new Float32Array(new Uint32Array([src.readUInt16LE(2 * i) << 16]).buffer)[0]
                    : Math.fround(src.readDoubleLE(8 * i));
                const got = dst.readFloatLE(4 * i);
                if (!(got === want || (Number.isNaN(got) && Number.isNaN(want)))) { errs.push(`${gname}[${i}]: ${got} != ${want}`); break; }
            }
        } else errs.push(`${gname}: ${e.dtype} written as ${ty[0]} (not a lossless path)`);
        count++;
    }
    const covered = r.tensorInfos.filter((t) => t.name.startsWith(prefix)).length;
    if (count === 0 || count !== covered) errs.push(`compared ${count} tensors, the GGUF has ${covered} named ${prefix}*`);
    if (errs.length) return notOk(what, errs.slice(0, 5).join("; "));
    ok(`${what}: ${count} tensors`);
}

const args = process.argv.slice(2);
if (args[0] === "--safetensors") {
    await checkSafetensors(args[1], args[2], args[3]);
} else {
    const [info, ...files] = args;
    if (!info || !files.length) { console.error("usage: node gguf_check.mjs DIT_INFO FILE.gguf..."); process.exit(2); }
    for (const f of files) await checkFile(info, f);
}
process.exit(failed ? 1 : 0);
