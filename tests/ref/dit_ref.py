"""dit_ref.py -- PyTorch/numpy reference of everything dit.c computes.

Written from shared/reference/dit-numerics.md (section numbers "§x.y" below refer to it).
It is the oracle for the C/CUDA code: run it in float64 (`model.double()`) to make
reference outputs, in float32 to measure how far an fp32 implementation may drift.

Contents
  DiT                  official DiT (facebookresearch/DiT models.py) with the official state_dict names
  get_2d_sincos_pos_embed, timestep_embedding
  space_timesteps, Schedule, make_schedule      respaced linear schedule (§3)
  p_sample_loop_ddpm, ddim_loop                 samplers with sample.py semantics (§3.5-3.7, §7)
  dpmpp_2m_loop                                 DPM-Solver++(2M) as diffusers' DPMSolverMultistepScheduler
  training_losses                               MSE(eps) + VLB for the learned variance (used by train.py)
  VAEDecoder           diffusers AutoencoderKL decoder path with diffusers key names (§5)
  philox4x32, philox_randn                      this project's noise generator (numpy, independent of torch)

Dimension letters: B batch, N kept images, C channels, H/W spatial, T tokens, D hidden, h heads, hd head dim,
p patch, g = input_size/p token grid side, K sampling steps.

Works with torch 1.13 and 2.x (no SDPA, no torch.compile).
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# =====================================================================================================
# DiT model (§1)
# =====================================================================================================


def get_2d_sincos_pos_embed(D, g):
    """§1.2. Returns float64 numpy (T=g*g, D). Token m = i*g + j (i row, j column):
    [sin(j w) | cos(j w) | sin(i w) | cos(i w)], w_k = 1/10000^(k/Q), Q = D/4, k=0..Q-1."""
    assert D % 4 == 0
    Q = D // 4
    omega = 1.0 / 10000 ** (np.arange(Q, dtype=np.float64) / Q)  # (Q,)
    i, j = np.meshgrid(np.arange(g, dtype=np.float64), np.arange(g, dtype=np.float64), indexing="ij")
    i, j = i.reshape(-1), j.reshape(-1)  # (T,) row / column of each token
    aj, ai = np.outer(j, omega), np.outer(i, omega)  # (T, Q)
    return np.concatenate([np.sin(aj), np.cos(aj), np.sin(ai), np.cos(ai)], axis=1)


def timestep_embedding(t, dim=256, max_period=10000):
    """§1.3. freqs_k = exp(-ln(10000) * k / half), k < half = dim/2, computed in float32 (as the official
    code does on CPU); args = float32(t) * freqs (float32 product); emb = [cos(args), sin(args)] (cos first).
    The cos/sin are evaluated in float64 on the float32 args, so the result is the exact value of the
    official fp32 arguments (fp32 cos/sin differ from it by <= 1 ulp). Returns float64 (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half)  # (half,) fp32, CPU
    args = t.detach().float()[:, None] * freqs.to(t.device)[None]  # (B, half) fp32 product (exact IEEE rounding)
    args = args.double()
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim) float64


def modulate(x, shift, scale):
    """§1.6: x * (1 + scale) + shift; x (B,T,D), shift/scale (B,D) broadcast over tokens."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def layer_norm(x):
    """LayerNorm over the last dim, eps 1e-6, no affine (§1.6)."""
    return F.layer_norm(x, (x.shape[-1],), eps=1e-6)


class PatchEmbed(nn.Module):
    """§1.1: Conv2d(C, D, p, stride p) then flatten(2).transpose(1,2): (B,C,H,W) -> (B,T,D), token i*g+j."""

    def __init__(self, in_ch, D, p):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, D, kernel_size=p, stride=p, bias=True)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    """§1.3: mlp = [Linear(256, D), SiLU, Linear(D, D)] on the sinusoidal embedding."""

    def __init__(self, D, freq_dim=256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, D), nn.SiLU(), nn.Linear(D, D))

    def forward(self, t):
        w = self.mlp[0].weight
        return self.mlp(timestep_embedding(t, self.freq_dim).to(device=w.device, dtype=w.dtype))


class LabelEmbedder(nn.Module):
    """§1.4: table (num_classes + 1, D) when class dropout is on; null label = num_classes.
    In training mode labels are replaced by the null label with probability dropout_prob."""

    def __init__(self, num_classes, D, dropout_prob):
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), D)

    def forward(self, y):
        if self.training and self.dropout_prob > 0:
            drop = torch.rand(y.shape[0], device=y.device) < self.dropout_prob
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.embedding_table(y)


class Attention(nn.Module):
    """§1.7: qkv rows laid out [q heads | k heads | v heads], each head hd wide;
    explicit softmax(q k^T * hd^-0.5) v (scale applied after the matmul, timm 0.6 style)."""

    def __init__(self, D, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(D, 3 * D, bias=True)
        self.proj = nn.Linear(D, D, bias=True)

    def forward(self, x):
        B, T, D = x.shape
        hd = D // self.heads
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, hd).permute(2, 0, 3, 1, 4)  # (3, B, h, T, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)) * hd ** -0.5  # (B, h, T, T)
        att = att.softmax(dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, D)  # heads re-concatenated in head order
        return self.proj(o)


class Mlp(nn.Module):
    """§1.8: fc1 D->4D, tanh-GELU, fc2 4D->D."""

    def __init__(self, D, hidden):
        super().__init__()
        self.fc1 = nn.Linear(D, hidden)
        self.fc2 = nn.Linear(hidden, D)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """§1.6: adaLN-Zero block. mod = Linear(SiLU(c)) chunked (shift_msa, scale_msa, gate_msa,
    shift_mlp, scale_mlp, gate_mlp); x += gate * sublayer(modulate(LN(x), shift, scale))."""

    def __init__(self, D, heads, mlp_ratio=4.0):
        super().__init__()
        self.attn = Attention(D, heads)
        self.mlp = Mlp(D, int(D * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D, bias=True))

    def forward(self, x, c):
        sh1, sc1, g1, sh2, sc2, g2 = self.adaLN_modulation(c).chunk(6, dim=1)  # each (B, D)
        x = x + g1.unsqueeze(1) * self.attn(modulate(layer_norm(x), sh1, sc1))
        x = x + g2.unsqueeze(1) * self.mlp(modulate(layer_norm(x), sh2, sc2))
        return x


class FinalLayer(nn.Module):
    """§1.9: [shift, scale] = Linear(SiLU(c)).chunk(2) (shift first); Linear(D, p*p*out_ch)."""

    def __init__(self, D, p, out_ch):
        super().__init__()
        self.linear = nn.Linear(D, p * p * out_ch, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D, bias=True))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(layer_norm(x), shift, scale))


class DiT(nn.Module):
    """Official DiT. forward(x (B,C,H,W), t (B,) int original timesteps, y (B,) int labels) -> (B, out_ch, H, W).
    out_ch = 2*C with learn_sigma (eps | variance interpolation v)."""

    def __init__(self, input_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28, num_heads=16,
                 mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=1000, learn_sigma=True):
        super().__init__()
        self.input_size, self.patch_size, self.in_channels = input_size, patch_size, in_channels
        self.hidden_size, self.depth, self.num_heads = hidden_size, depth, num_heads
        self.num_classes, self.learn_sigma, self.class_dropout_prob = num_classes, learn_sigma, class_dropout_prob
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        g = input_size // patch_size
        self.x_embedder = PatchEmbed(in_channels, hidden_size, patch_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        # Parameter (not buffer): it is in the state_dict and the checkpoint value wins (§2.3).
        self.pos_embed = nn.Parameter(torch.zeros(1, g * g, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.pos_embed.data.copy_(torch.from_numpy(get_2d_sincos_pos_embed(hidden_size, g)).float().unsqueeze(0))

    def config(self):
        return dict(input_size=self.input_size, patch_size=self.patch_size, in_channels=self.in_channels,
                    hidden_size=self.hidden_size, depth=self.depth, num_heads=self.num_heads,
                    num_classes=self.num_classes, learn_sigma=self.learn_sigma,
                    class_dropout_prob=self.class_dropout_prob)

    def initialize_weights(self):
        """Official adaLN-Zero init: xavier_uniform Linears with zero bias, patch conv xavier on its
        (D, C*p*p) view, label table N(0, 0.02), t_embedder Linears N(0, 0.02), every adaLN Linear and the
        final Linear zero, pos_embed = fixed sincos."""
        def _basic(m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.constant_(m.bias, 0)
        self.apply(_basic)
        g = self.input_size // self.patch_size
        self.pos_embed.data.copy_(torch.from_numpy(get_2d_sincos_pos_embed(self.hidden_size, g)).float().unsqueeze(0))
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.constant_(self.x_embedder.proj.bias, 0)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for blk in self.blocks:
            nn.init.constant_(blk.adaLN_modulation[-1].weight, 0)
            nn.init.constant_(blk.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].weight, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.linear.weight, 0)
        nn.init.constant_(self.final_layer.linear.bias, 0)

    def unpatchify(self, x):
        """§1.10: (B, T, p*p*oc) -> (B, oc, g*p, g*p); feature f = (pi*p + qi)*oc + c (channel fastest)."""
        oc, p = self.out_channels, self.patch_size
        g = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], g, g, p, p, oc)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], oc, g * p, g * p)

    def forward(self, x, t, y, return_intermediates=False):
        """§1: tokens = patch(x) + pos; c = t_emb + y_emb; blocks; final layer; unpatchify."""
        inter = {}
        h = self.x_embedder(x) + self.pos_embed  # (B, T, D)
        temb = self.t_embedder(t)  # (B, D)
        c = temb + self.y_embedder(y)  # (B, D)
        inter["temb"], inter["c"] = temb, c
        for i, blk in enumerate(self.blocks):
            h = blk(h, c)
            inter["block%d" % i] = h
        out = self.unpatchify(self.final_layer(h, c))  # (B, out_ch, H, W)
        return (out, inter) if return_intermediates else out

    def forward_with_cfg(self, x, t, y, cfg_scale, cfg_channels=3):
        """§1.11. x (2N,...): only x[:N] is used, the model runs on [x[:N]; x[:N]] with labels y (2N).
        Guidance g = u + s*(c - u) on eps channels < cfg_channels; the rest of every row keeps its own pass
        (rows n<N: conditional). Official DiT uses cfg_channels=3 with 4 latent channels; use 1 for a
        1-channel pixel model."""
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half], dim=0), t, y)
        eps, rest = out[:, :cfg_channels], out[:, cfg_channels:]
        cond, uncond = torch.split(eps, len(eps) // 2, dim=0)
        guided = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([guided, guided], dim=0), rest], dim=1)


# =====================================================================================================
# Diffusion (§3)
# =====================================================================================================


def space_timesteps(num_timesteps, section_counts):
    """§3.3 (RS:12-62). Returns the set of kept original timesteps.
    "ddimN": range(0, T, i) for the smallest stride i giving N steps.
    "N" or "a,b,c": split T into equal sections (the first T % n one longer); in each section of size S take
    `count` indices round(cur), cur = 0.0 accumulated by repeated += (S-1)/(count-1) (Python round = half-even)."""
    if isinstance(section_counts, str):
        if section_counts.startswith("linspace"):
            # diffusers' timestep_spacing="linspace" (DPMSolverMultistepScheduler's default):
            # np.linspace(0, T-1, N+1).round()[::-1][:-1], i.e. round(i (T-1)/N) for i = 1..N (0 dropped)
            n = int(section_counts[len("linspace"):])
            ts = np.linspace(0, num_timesteps - 1, n + 1).round()[1:].astype(np.int64)
            if n < 1 or len(set(ts.tolist())) != n:
                raise ValueError("linspace%d: timesteps collide" % n)
            return set(ts.tolist())
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim"):])
            for i in range(1, num_timesteps):
                if len(range(0, num_timesteps, i)) == desired:
                    return set(range(0, num_timesteps, i))
            raise ValueError("cannot create exactly %d steps with an integer stride" % desired)
        section_counts = [int(s) for s in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, steps = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError("cannot divide section of %d steps into %d" % (size, count))
        frac_stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.append(start + round(cur))
            cur += frac_stride
        start += size
    return set(steps)


def linear_betas(num_timesteps=1000):
    """§3.2: np.linspace(1e-4 * s, 0.02 * s, T) float64 with s = 1000 / T."""
    scale = 1000 / num_timesteps
    return np.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=np.float64)


class Schedule:
    """All float64 arrays of one (possibly respaced) process, index k in [0, K) (§3.2):
    abar = cumprod(1-beta), abar_prev = [1, abar[:-1]], sqrt_recip = sqrt(1/abar), sqrt_recipm1 = sqrt(1/abar-1),
    post_var = beta (1-abar_prev)/(1-abar), post_logvar_clipped = log([post_var[1], post_var[1:]]),
    coef1 = beta sqrt(abar_prev)/(1-abar), coef2 = (1-abar_prev) sqrt(alpha)/(1-abar).
    timestep_map[k] = original timestep fed to the model."""

    def __init__(self, betas, timestep_map):
        b = np.asarray(betas, dtype=np.float64)
        self.betas = b
        self.K = len(b)
        self.timestep_map = np.asarray(timestep_map, dtype=np.int64)
        alphas = 1.0 - b
        self.alphas_cumprod = np.cumprod(alphas, axis=0)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = b * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = b * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        self.log_betas = np.log(b)


def make_schedule(spacing="", num_timesteps=1000):
    """§3.1/3.3: base linear schedule of num_timesteps; spacing "" = all steps; otherwise respaced:
    for kept i (ascending): beta'_k = 1 - abar_i / abar_last, abar_last = abar_i; then everything recomputed."""
    base = linear_betas(num_timesteps)
    if spacing == "":
        return Schedule(base, np.arange(num_timesteps))
    use = space_timesteps(num_timesteps, spacing)
    abar = np.cumprod(1.0 - base)
    last, new_betas, tmap = 1.0, [], []
    for i, a in enumerate(abar):
        if i in use:
            new_betas.append(1 - a / last)
            last = a
            tmap.append(i)
    return Schedule(np.array(new_betas), tmap)


def _coef(arr, k, like):
    """Per-step scalar: float64 array entry cast to the working dtype (official: .float() at lookup, §3.2)."""
    return torch.tensor(arr[k], dtype=like.dtype, device=like.device)


def model_eps_v(model, x, k, sched, labels, cfg_scale, cfg_channels=None):
    """Model output for the N kept chains at respaced step k: returns eps (N,C,H,W), v (N,C,H,W).
    cfg_scale None: plain forward on N rows. Otherwise sample.py's CFG path (§1.11, §7): batch [x; x],
    labels [y; null], rows n<N: eps ch < cfg_channels guided, other channels conditional."""
    N, C = x.shape[0], x.shape[1]
    t = torch.full((N,), int(sched.timestep_map[k]), dtype=torch.long, device=x.device)
    if cfg_scale is None:
        out = model(x, t, labels)
    else:
        if cfg_channels is None:
            cfg_channels = 3 if C == 4 else C
        null = torch.full_like(labels, model.num_classes)
        out = model.forward_with_cfg(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]),
                                     cfg_scale, cfg_channels)[:N]
    return out[:, :C], out[:, C:]


def p_mean_variance(sched, k, x, eps, v):
    """§3.5 LEARNED_RANGE, EPSILON, clip_denoised False:
    x0 = sqrt_recip[k] x - sqrt_recipm1[k] eps;  mean = coef1[k] x0 + coef2[k] x;
    frac = (v+1)/2;  logvar = frac log(beta'_k) + (1-frac) post_logvar_clipped[k]."""
    x0 = _coef(sched.sqrt_recip_alphas_cumprod, k, x) * x - _coef(sched.sqrt_recipm1_alphas_cumprod, k, x) * eps
    mean = _coef(sched.posterior_mean_coef1, k, x) * x0 + _coef(sched.posterior_mean_coef2, k, x) * x
    frac = (v + 1) / 2
    logvar = frac * _coef(sched.log_betas, k, x) + (1 - frac) * _coef(sched.posterior_log_variance_clipped, k, x)
    return x0, mean, logvar


def _noise_for_step(step_noise, i, x, seed):
    """Noise of loop iteration i (0-based, i = K-1-k): step_noise[i] if given, else philox step i+1
    with image_index n for row n (when seed is given), else torch.randn."""
    if step_noise is not None:
        return torch.as_tensor(np.asarray(step_noise[i])).to(device=x.device, dtype=x.dtype)
    if seed is not None:
        return philox_noise_like(seed, x, step=i + 1).to(device=x.device, dtype=x.dtype)
    return torch.randn_like(x)


@torch.no_grad()
def p_sample_loop_ddpm(model, sched, x_init, labels, cfg_scale=None, step_noise=None, cfg_channels=None, seed=None):
    """§3.6/§7 ancestral sampling of the N kept chains. x_init (N,C,H,W); labels (N,) long.
    step_noise: None or array (K, N, C, H, W); entry i is used by loop iteration i (k = K-1-i).
    for k = K-1..0: x = mean + (k != 0) * exp(0.5 logvar) * noise."""
    x = x_init
    for i, k in enumerate(reversed(range(sched.K))):
        eps, v = model_eps_v(model, x, k, sched, labels, cfg_scale, cfg_channels)
        _, mean, logvar = p_mean_variance(sched, k, x, eps, v)
        noise = _noise_for_step(step_noise, i, x, seed)
        x = mean + (float(k != 0) * torch.exp(0.5 * logvar)) * noise
    return x


@torch.no_grad()
def ddim_loop(model, sched, x_init, labels, cfg_scale=None, eta=0.0, step_noise=None, cfg_channels=None, seed=None):
    """§3.7 DDIM on the respaced schedule (same step-noise convention as p_sample_loop_ddpm):
    x0 from eps as in §3.5; eps' = (sqrt_recip x - x0) / sqrt_recipm1;
    sigma = eta sqrt((1-abar_prev)/(1-abar)) sqrt(1 - abar/abar_prev);
    x = x0 sqrt(abar_prev) + sqrt(1 - abar_prev - sigma^2) eps' + (k != 0) sigma noise."""
    x = x_init
    for i, k in enumerate(reversed(range(sched.K))):
        eps, v = model_eps_v(model, x, k, sched, labels, cfg_scale, cfg_channels)
        x0, _, _ = p_mean_variance(sched, k, x, eps, v)
        eps2 = (_coef(sched.sqrt_recip_alphas_cumprod, k, x) * x - x0) / _coef(sched.sqrt_recipm1_alphas_cumprod, k, x)
        ab, abp = sched.alphas_cumprod[k], sched.alphas_cumprod_prev[k]
        sigma = eta * math.sqrt((1 - abp) / (1 - ab)) * math.sqrt(1 - ab / abp)
        x = x0 * _coef([math.sqrt(abp)], 0, x) + _coef([math.sqrt(1 - abp - sigma ** 2)], 0, x) * eps2
        if k != 0 and eta != 0:
            x = x + _coef([sigma], 0, x) * _noise_for_step(step_noise, i, x, seed)
    return x


@torch.no_grad()
def dpmpp_2m_loop(model, sched, x_init, labels, cfg_scale=None, cfg_channels=None):
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv:2211.01095, Algorithm 2; data prediction, multistep, order 2,
    the "midpoint" form) on the respaced schedule, eps only (the learned variance is not used):
    alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha / sigma); step from s = abar[k] to
    t = abar_prev[k]; m = x0 prediction (§3.5, clamped only with clip_denoised, which this loop does not use);
    h = lambda_t - lambda_s;  D = m_k (first step, and the last one, which goes to sigma = 0 and returns m),
    else r = h_prev / h, D = m_k + (m_k - m_prev) / (2 r);
    x_t = (sigma_t / sigma_s) x - alpha_t (exp(-h) - 1) D."""
    x, m_prev, h_prev = x_init, None, None
    for i, k in enumerate(reversed(range(sched.K))):
        eps, v = model_eps_v(model, x, k, sched, labels, cfg_scale, cfg_channels)
        m, _, _ = p_mean_variance(sched, k, x, eps, v)
        ab, abp = sched.alphas_cumprod[k], sched.alphas_cumprod_prev[k]
        if abp == 1.0:   # sigma_t = 0: lambda_t = inf, exp(-h) = 0, x_t = D; first order there
            x = m
            break
        a_s, s_s, a_t, s_t = math.sqrt(ab), math.sqrt(1 - ab), math.sqrt(abp), math.sqrt(1 - abp)
        h = math.log(a_t / s_t) - math.log(a_s / s_s)
        D = m if m_prev is None else m + (m - m_prev) * (h / (2.0 * h_prev))
        x = (s_t / s_s) * x - (a_t * (math.exp(-h) - 1.0)) * D
        m_prev, h_prev = m, h
    return x


# ---- training loss (DiT gaussian_diffusion.training_losses, LossType.MSE, LEARNED_RANGE) -------------


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N1 || N2) elementwise = 0.5 (-1 + lv2 - lv1 + exp(lv1 - lv2) + (m1 - m2)^2 exp(-lv2))."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x):
    """Phi(x) ~ 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """log P(x) of data in [-1,1] quantised to 255 bins of width 2/255 under N(means, exp(log_scales)^2);
    the edge bins extend to -inf / +inf. Probabilities clamped at 1e-12 before the log."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _gather(sched, name, t, like):
    """sched.<name>[t] for a batch of indices t, shaped (B,1,1,1) in like's dtype (float64 table cached on t's device)."""
    cache = sched.__dict__.setdefault("_dev_cache", {})
    key = (name, str(t.device))
    if key not in cache:
        cache[key] = torch.as_tensor(getattr(sched, name), device=t.device)
    return cache[key][t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def training_losses(model, sched, x0, t, y, noise=None):
    """DiT training objective (MSE + learned-range VLB), t (B,) in [0, K) of an unrespaced schedule.
    x_t = sqrt(abar_t) x0 + sqrt(1-abar_t) noise; out = model(x_t, t, y) -> eps, v.
    mse = mean over C,H,W of (noise - eps)^2.
    vb: with eps detached (the variance head only learns through vb), p = N(mean(x0_hat), exp(logvar(v)));
      t > 0: KL(q(x_{t-1}|x_t,x0) || p) / ln 2 averaged;  t == 0: -log-likelihood of x0 under p, / ln 2.
    Returns dict(loss, mse, vb), each (B,)."""
    if noise is None:
        noise = torch.randn_like(x0)
    x_t = _gather(sched, "sqrt_alphas_cumprod", t, x0) * x0 + _gather(sched, "sqrt_one_minus_alphas_cumprod", t, x0) * noise
    out = model(x_t, t, y).float()
    C = x0.shape[1]
    eps, v = out[:, :C], out[:, C:]
    # model's p(x_{t-1} | x_t) with eps frozen
    x0_hat = _gather(sched, "sqrt_recip_alphas_cumprod", t, x_t) * x_t - _gather(sched, "sqrt_recipm1_alphas_cumprod", t, x_t) * eps.detach()
    p_mean = _gather(sched, "posterior_mean_coef1", t, x_t) * x0_hat + _gather(sched, "posterior_mean_coef2", t, x_t) * x_t
    frac = (v + 1) / 2
    p_logvar = frac * _gather(sched, "log_betas", t, x_t) + (1 - frac) * _gather(sched, "posterior_log_variance_clipped", t, x_t)
    # true posterior q(x_{t-1} | x_t, x0)
    q_mean = _gather(sched, "posterior_mean_coef1", t, x_t) * x0 + _gather(sched, "posterior_mean_coef2", t, x_t) * x_t
    q_logvar = _gather(sched, "posterior_log_variance_clipped", t, x_t)
    kl = normal_kl(q_mean, q_logvar, p_mean, p_logvar).mean(dim=(1, 2, 3)) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x0, p_mean, 0.5 * p_logvar).mean(dim=(1, 2, 3)) / math.log(2.0)
    vb = torch.where(t == 0, nll, kl)
    mse = ((noise - eps) ** 2).mean(dim=(1, 2, 3))
    return {"loss": mse + vb, "mse": mse, "vb": vb}


# =====================================================================================================
# SD VAE decoder (§5), diffusers names
# =====================================================================================================


def group_norm(x, mod):
    return F.group_norm(x, 32, mod.weight, mod.bias, eps=1e-6)


class GN(nn.Module):
    """GroupNorm(32, C, eps 1e-6, affine) holder (diffusers names .weight/.bias)."""

    def __init__(self, C):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(C))
        self.bias = nn.Parameter(torch.zeros(C))

    def forward(self, x):
        return group_norm(x, self)


class ResnetBlock2D(nn.Module):
    """§5.3: h = conv1(SiLU(GN1(x))); h = conv2(SiLU(GN2(h))); out = shortcut(x) + h
    (shortcut = 1x1 conv_shortcut when cin != cout, else identity)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.norm1 = GN(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = GN(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class MidAttention(nn.Module):
    """§5.4: single-head attention over the H*W tokens (row-major), GroupNorm first, residual added:
    out = x + to_out(softmax(q k^T / sqrt(C)) v), q/k/v = Linear(GN(x) tokens)."""

    def __init__(self, C):
        super().__init__()
        self.group_norm = GN(C)
        self.to_q = nn.Linear(C, C)
        self.to_k = nn.Linear(C, C)
        self.to_v = nn.Linear(C, C)
        self.to_out = nn.ModuleList([nn.Linear(C, C)])

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.group_norm(x).view(B, C, H * W).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.to_q(h), self.to_k(h), self.to_v(h)
        att = torch.softmax((q @ k.transpose(1, 2)) / math.sqrt(C), dim=-1)  # (B, HW, HW)
        o = self.to_out[0](att @ v)  # (B, HW, C)
        return x + o.transpose(1, 2).reshape(B, C, H, W)


class MidBlock(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(C, C), ResnetBlock2D(C, C)])
        self.attentions = nn.ModuleList([MidAttention(C)])

    def forward(self, x):
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Upsample2D(nn.Module):
    """§5.2: nearest x2 then conv 3x3 pad 1."""

    def __init__(self, C):
        super().__init__()
        self.conv = nn.Conv2d(C, C, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UpDecoderBlock2D(nn.Module):
    def __init__(self, cin, cout, n_resnets, add_upsample):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if j == 0 else cout, cout) for j in range(n_resnets)])
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if add_upsample else None

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class Decoder(nn.Module):
    """§5.2: conv_in -> mid_block -> up_blocks (channels reversed(block_out_channels), layers_per_block+1
    resnets each, upsampler on all but the last) -> GN -> SiLU -> conv_out."""

    def __init__(self, block_out_channels, layers_per_block=2, latent_channels=4, out_channels=3):
        super().__init__()
        rev = list(reversed(block_out_channels))
        self.conv_in = nn.Conv2d(latent_channels, rev[0], 3, padding=1)
        self.mid_block = MidBlock(rev[0])
        ups, prev = [], rev[0]
        for i, ch in enumerate(rev):
            ups.append(UpDecoderBlock2D(prev, ch, layers_per_block + 1, add_upsample=(i != len(rev) - 1)))
            prev = ch
        self.up_blocks = nn.ModuleList(ups)
        self.conv_norm_out = GN(block_out_channels[0])
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, 3, padding=1)

    def forward(self, z):
        h = self.mid_block(self.conv_in(z))
        for b in self.up_blocks:
            h = b(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class VAEDecoder(nn.Module):
    """Decode path of diffusers AutoencoderKL. state_dict keys: post_quant_conv.*, decoder.* (diffusers names).
    decode(latents) expects latents ALREADY divided by the scaling factor, i.e. call decode(z / 0.18215)
    with z the DiT sample (§4, sample.py). Output (B, out_channels, 8*H, 8*W), ~[-1, 1]."""

    def __init__(self, block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, out_channels=3):
        super().__init__()
        self.block_out_channels = list(block_out_channels)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)
        self.decoder = Decoder(self.block_out_channels, layers_per_block, latent_channels, out_channels)

    def decode(self, latents):
        return self.decoder(self.post_quant_conv(latents))

    def forward(self, latents):
        return self.decode(latents)


# =====================================================================================================
# Philox4x32-10 noise (this project's generator), numpy, independent of torch
# =====================================================================================================

PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
PHILOX_TAG = 0x44695421
_M32 = np.uint64(0xFFFFFFFF)


def philox4x32(ctr, key, rounds=10):
    """Random123 Philox4x32-R. ctr: 4 arrays (uint64 holding 32-bit values, broadcastable), key: 2 ints.
    One round: p0 = M0*c0, p1 = M1*c2 (32x32->64);
      (c0, c1, c2, c3) <- (hi(p1) ^ c1 ^ k0, lo(p1), hi(p0) ^ c3 ^ k1, lo(p0));  then key += (W0, W1) mod 2^32."""
    c0, c1, c2, c3 = [np.asarray(c, dtype=np.uint64) & _M32 for c in ctr]
    k0, k1 = np.uint64(key[0] & 0xFFFFFFFF), np.uint64(key[1] & 0xFFFFFFFF)
    for r in range(rounds):
        p0 = np.uint64(PHILOX_M0) * c0  # < 2^64, exact in uint64
        p1 = np.uint64(PHILOX_M1) * c2
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & _M32, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & _M32)
        k0 = (k0 + np.uint64(PHILOX_W0)) & _M32
        k1 = (k1 + np.uint64(PHILOX_W1)) & _M32
    return c0, c1, c2, c3


def _philox_kat():
    """Random123 known-answer tests for Philox4x32-10."""
    out = [int(w) for w in philox4x32((0, 0, 0, 0), (0, 0))]
    assert out == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8], [hex(w) for w in out]
    f = 0xFFFFFFFF
    out = [int(w) for w in philox4x32((f, f, f, f), (f, f))]
    assert out == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD], [hex(w) for w in out]
    out = [int(w) for w in philox4x32((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0))]
    assert out == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1], [hex(w) for w in out]


_philox_kat()


def philox_randn(seed, image_index, step, n):
    """n standard normals (float32) of one image at one step.
    key = (seed & 0xffffffff, seed >> 32); group j (elements 4j..4j+3) uses counter (j, image_index, step, 0x44695421).
    u_i = (w_i + 0.5) / 2^32 in double; Box-Muller on (w0, w1) -> elements 4j, 4j+1 and (w2, w3) -> 4j+2, 4j+3:
    r = sqrt(-2 ln u_a), (r cos(2 pi u_b), r sin(2 pi u_b)).
    step 0 = initial noise; loop iteration i (i = K-1-k) uses step i+1."""
    seed = int(seed)
    groups = (n + 3) // 4
    j = np.arange(groups, dtype=np.uint64)
    w = philox4x32((j, np.uint64(image_index), np.uint64(step), np.uint64(PHILOX_TAG)),
                   (seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF))
    u = [(wi.astype(np.float64) + 0.5) / 4294967296.0 for wi in w]
    out = np.empty((groups, 4), dtype=np.float64)
    for a, b, col in ((0, 1, 0), (2, 3, 2)):
        r = np.sqrt(-2.0 * np.log(u[a]))
        th = 2.0 * np.pi * u[b]
        out[:, col] = r * np.cos(th)
        out[:, col + 1] = r * np.sin(th)
    return out.reshape(-1)[:n].astype(np.float32)


def philox_noise_like(seed, x, step, image_offset=0):
    """(N, C, H, W) float32 torch tensor: row n = philox_randn(seed, image_offset + n, step, C*H*W)."""
    N = x.shape[0]
    per = int(np.prod(x.shape[1:]))
    rows = [philox_randn(seed, image_offset + n, step, per) for n in range(N)]
    return torch.from_numpy(np.stack(rows).reshape(tuple(x.shape)))
