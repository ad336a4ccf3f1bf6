/* Math the fused CPU kernels share (included by gnn/backends/fused_attention.c and gnn/layers/fused_blocks.c;
 * gnn/backends/compiled.py hashes it with each source, so a change here rebuilds both). */
#ifndef TXPERT_FAST_MATH_H
#define TXPERT_FAST_MATH_H
#include <math.h>
#include <stdint.h>

/* exp(x) for x <= 0 in float32, for softmax weights, ELU and tanh (Cephes' expf: x = n ln2 + r, |r| <= ln2/2,
 * a degree-6 polynomial in r, then times 2^n through the exponent bits), written so that GCC vectorises it
 * (libm's expf is a call per element): relative error about 1e-7, NaN
 * in gives NaN out, arguments below -87.3 give about 1e-38 instead of a denormal or 0. */
static inline __attribute__((always_inline)) float exp_nonpos_f32(float x) {
    x = x < -87.3f ? -87.3f : x;
    const float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = __builtin_fmaf(n, -0.693359375f, x);        /* fused, so reassociation cannot undo the split */
    r = __builtin_fmaf(n, 2.12194440e-4f, r);
    const float r2 = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    union { int32_t i; float f; } scale;
    scale.i = ((int32_t)n + 127) << 23;
    return p * scale.f;
}
static inline __attribute__((always_inline)) double exp_nonpos_f64(double x) { return exp(x); }

#endif
