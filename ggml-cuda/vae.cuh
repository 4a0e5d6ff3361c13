// vae.cuh - SD VAE decoder on the GPU (vae.cu)
#pragma once
#include "common.cuh"

// latents (n, C, L, L) as sampled (divided by the scaling factor here) -> images (n, 3, 8L, 8L), host
int dit_vae_decode_cuda(struct dit_cuda *c, dit_model *m, const float *latents, int n, float *images);
