/* Row-wise parts of the encoder blocks as fused CPU kernels (gnn/layers/fused_blocks.py states the math):
 * the residual ELU + LayerNorm that ends every ConvBlock, and LayerAttention's score, softmax over views and
 * weighted sum. Each is one pass over its rows (torch composes four to six passes, with an exp or tanh that
 * does not vectorise on every CPU). A caller runs row blocks [r0, r1) in parallel, one OpenMP thread each
 * (the libgomp torch runs on). Layouts are row-major: h, c, out, xhat, dx, dc (N, D); rstd (N);
 * p, dp (L, N, K) and h, dh (L, N, D) for the views; z, g (N, D); beta (N, L). Parameter gradients are
 * accumulated (+=) in double into the caller's slice for the block (dgamma, dbeta (D); dq (K)).
 * Compiled once per machine by gnn/backends/compiled.py. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../backends/fast_math.h"

/* ELU(y) = y for y > 0, exp(y) - 1 otherwise (NaN stays NaN); its derivative from y: 1 or exp(y). */
#define ELU_(SFX, T)                                                                                          \
static inline __attribute__((always_inline)) T elu_##SFX(T y) {                                               \
    return y > 0 ? y : exp_nonpos_##SFX(y > 0 ? 0 : y) - 1;                                                   \
}                                                                                                             \
static inline __attribute__((always_inline)) T elu_grad_##SFX(T y) {                                          \
    return y > 0 ? 1 : exp_nonpos_##SFX(y > 0 ? 0 : y);                                                       \
}                                                                                                             \
/* tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|) <= 1 (absolute error about 1e-7 in float32). */         \
static inline __attribute__((always_inline)) T tanh_##SFX(T x) {                                              \
    const T e = exp_nonpos_##SFX(-2 * (x < 0 ? -x : x));                                                               \
    const T t = (1 - e) / (1 + e);                                                                            \
    return x < 0 ? -t : t;                                                                                    \
}
ELU_(f32, float)
ELU_(f64, double)

#define DEFINE_KERNELS(T, SFX)                                                                                \
/* out = LN(h + ELU(c)): x = h + ELU(c), mu and var over the D columns, rstd = 1 / sqrt(var + eps),           \
 * xhat = (x - mu) rstd, out = xhat gamma + beta. Keeps xhat and rstd for the backward. */                    \
static inline __attribute__((always_inline)) void                                                             \
kernel_residual_elu_norm_forward_##SFX(int64_t r0, int64_t r1, int64_t D, const T *restrict h,                \
                                       const T *restrict c, const T *restrict gamma, const T *restrict beta,  \
                                       T eps, T *restrict out, T *restrict xhat, T *restrict rstd) {          \
    for (int64_t i = r0; i < r1; i++) {                                                                       \
        const T *hi = h + i * D, *ci = c + i * D;                                                             \
        T *xi = xhat + i * D, *oi = out + i * D;                                                              \
        T sum = 0, sq = 0;                                                                                    \
        for (int64_t k = 0; k < D; k++) { xi[k] = hi[k] + elu_##SFX(ci[k]); sum += xi[k]; }                   \
        const T mu = sum / D;                                                                                 \
        for (int64_t k = 0; k < D; k++) { const T d = xi[k] - mu; sq += d * d; }                              \
        const T r = 1 / sqrt(sq / D + eps);                                                                   \
        rstd[i] = r;                                                                                          \
        for (int64_t k = 0; k < D; k++) { xi[k] = (xi[k] - mu) * r; oi[k] = xi[k] * gamma[k] + beta[k]; }     \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
/* Backward with gy = g gamma: dx = rstd (gy - mean(gy) - xhat mean(gy xhat)) (the gradient of h), dc = dx    \
 * ELU'(c), dgamma += g xhat, dbeta += g. */                                                                  \
static inline __attribute__((always_inline)) void                                                             \
kernel_residual_elu_norm_backward_##SFX(int64_t r0, int64_t r1, int64_t D, const T *restrict g,               \
                                        const T *restrict c, const T *restrict xhat, const T *restrict rstd,  \
                                        const T *restrict gamma, T *restrict dx, T *restrict dc,              \
                                        double *restrict dgamma, double *restrict dbeta) {                    \
    for (int64_t i = r0; i < r1; i++) {                                                                       \
        const T *gi = g + i * D, *ci = c + i * D, *xi = xhat + i * D;                                         \
        T *dxi = dx + i * D, *dci = dc + i * D;                                                               \
        T m1 = 0, m2 = 0;                                                                                     \
        for (int64_t k = 0; k < D; k++) {                                                                     \
            const T gy = gi[k] * gamma[k];                                                                    \
            m1 += gy;                                                                                         \
            m2 += gy * xi[k];                                                                                 \
            dgamma[k] += (double)(gi[k] * xi[k]);                                                             \
            dbeta[k] += (double)gi[k];                                                                        \
        }                                                                                                     \
        m1 /= D;                                                                                              \
        m2 /= D;                                                                                              \
        const T r = rstd[i];                                                                                  \
        for (int64_t k = 0; k < D; k++) {                                                                     \
            const T d = r * (gi[k] * gamma[k] - m1 - xi[k] * m2);                                             \
            dxi[k] = d;                                                                                       \
            dci[k] = d * elu_grad_##SFX(ci[k]);                                                               \
        }                                                                                                     \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
/* LayerAttention forward for nodes [r0, r1): s_l = sum_k q_k tanh(p_{l,i,k}), beta = softmax over the L      \
 * views, z_i = sum_l beta_l h_{l,i}. */                                                                      \
static inline __attribute__((always_inline)) void                                                             \
kernel_layer_attention_forward_##SFX(int64_t r0, int64_t r1, int64_t L, int64_t N, int64_t K, int64_t D,      \
                                     const T *restrict p, const T *restrict h, const T *restrict q,           \
                                     T *restrict z, T *restrict beta) {                                       \
    for (int64_t i = r0; i < r1; i++) {                                                                       \
        T *bi = beta + i * L, *zi = z + i * D, peak = 0, total = 0;                                           \
        for (int64_t l = 0; l < L; l++) {                                                                     \
            const T *pl = p + (l * N + i) * K;                                                                \
            T s = 0;                                                                                          \
            for (int64_t k = 0; k < K; k++) s += q[k] * tanh_##SFX(pl[k]);                                    \
            bi[l] = s;                                                                                        \
            if (l == 0 || s > peak) peak = s;                                                                 \
        }                                                                                                     \
        for (int64_t l = 0; l < L; l++) { bi[l] = exp(bi[l] - peak); total += bi[l]; }                        \
        for (int64_t k = 0; k < D; k++) zi[k] = 0;                                                            \
        for (int64_t l = 0; l < L; l++) {                                                                     \
            const T b = bi[l] / total, *hl = h + (l * N + i) * D;                                             \
            bi[l] = b;                                                                                        \
            for (int64_t k = 0; k < D; k++) zi[k] += b * hl[k];                                               \
        }                                                                                                     \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
/* LayerAttention backward: a_l = <g_i, h_{l,i}>, ds_l = beta_l (a_l - sum_m beta_m a_m), dh_{l,i} =         \
 * beta_l g_i, dp_{l,i,k} = ds_l q_k (1 - tanh^2 p_{l,i,k}), dq_k += sum ds_l tanh p_{l,i,k}. A scratch of L  \
 * values per block holds a. */                                                                               \
static inline __attribute__((always_inline)) int                                                              \
kernel_layer_attention_backward_##SFX(int64_t r0, int64_t r1, int64_t L, int64_t N, int64_t K, int64_t D,     \
                                      const T *restrict p, const T *restrict h, const T *restrict q,          \
                                      const T *restrict beta, const T *restrict g, T *restrict dp,            \
                                      T *restrict dh, double *restrict dq) {                                  \
    T *a = malloc(sizeof(T) * L), *rdq = malloc(sizeof(T) * K);                                               \
    if (!a || !rdq) { free(a); free(rdq); return 1; }                                                         \
    for (int64_t i = r0; i < r1; i++) {                                                                       \
        const T *gi = g + i * D, *bi = beta + i * L;                                                          \
        T mean = 0;                                                                                           \
        for (int64_t l = 0; l < L; l++) {                                                                     \
            const T *hl = h + (l * N + i) * D;                                                                \
            T *dhl = dh + (l * N + i) * D, s = 0;                                                             \
            for (int64_t k = 0; k < D; k++) { s += gi[k] * hl[k]; dhl[k] = bi[l] * gi[k]; }                   \
            a[l] = s;                                                                                         \
            mean += bi[l] * s;                                                                                \
        }                                                                                                     \
        for (int64_t k = 0; k < K; k++) rdq[k] = 0;                                                           \
        for (int64_t l = 0; l < L; l++) {                                                                     \
            const T ds = bi[l] * (a[l] - mean), *pl = p + (l * N + i) * K;                                    \
            T *dpl = dp + (l * N + i) * K;                                                                    \
            for (int64_t k = 0; k < K; k++) {                                                                 \
                const T t = tanh_##SFX(pl[k]);                                                                \
                dpl[k] = ds * q[k] * (1 - t * t);                                                             \
                rdq[k] += ds * t;                                                                             \
            }                                                                                                 \
        }                                                                                                     \
        for (int64_t k = 0; k < K; k++) dq[k] += (double)rdq[k];                                              \
    }                                                                                                         \
    free(a); free(rdq);                                                                                       \
    return 0;                                                                                                 \
}

DEFINE_KERNELS(float, f32)
DEFINE_KERNELS(double, f64)

/* float32 gets the common widths as compile-time constants, so the row loops unroll into vector instructions;
 * other widths, and float64, run the same code with run-time sizes. */
#define WIDTHS_f32(CALL, W)                                                                                   \
    if (W == 64) { CALL(64); } else if (W == 32) { CALL(32); } else if (W == 128) { CALL(128); }              \
    else if (W == 16) { CALL(16); } else if (W == 256) { CALL(256); } else { CALL(W); }
#define WIDTHS_f64(CALL, W) CALL(W);

/* The entry points: nb row blocks of about equal size over n rows, one OpenMP thread each; block m
 * accumulates its parameter gradients into its slice (m D or m K onwards). Return nonzero when a block could
 * not allocate its scratch. */
#define DEFINE_PARALLEL(T, SFX)                                                                               \
int tbk_residual_elu_norm_forward_##SFX(int64_t nb, int64_t n, int64_t D, const T *h, const T *c,             \
                                        const T *gamma, const T *beta, T eps, T *out, T *xhat, T *rstd) {     \
    _Pragma("omp parallel for schedule(static, 1)")                                                           \
    for (int64_t m = 0; m < nb; m++) {                                                                        \
        const int64_t r0 = n * m / nb, r1 = n * (m + 1) / nb;                                                 \
        WIDTHS_##SFX(RN_FWD_##SFX, D)                                                                         \
    }                                                                                                         \
    return 0;                                                                                                 \
}                                                                                                             \
int tbk_residual_elu_norm_backward_##SFX(int64_t nb, int64_t n, int64_t D, const T *g, const T *c,            \
                                         const T *xhat, const T *rstd, const T *gamma, T *dx, T *dc,          \
                                         double *dgamma, double *dbeta) {                                     \
    _Pragma("omp parallel for schedule(static, 1)")                                                           \
    for (int64_t m = 0; m < nb; m++) {                                                                        \
        const int64_t r0 = n * m / nb, r1 = n * (m + 1) / nb;                                                 \
        double *dgm = dgamma + m * D, *dbm = dbeta + m * D;                                                   \
        WIDTHS_##SFX(RN_BWD_##SFX, D)                                                                         \
    }                                                                                                         \
    return 0;                                                                                                 \
}                                                                                                             \
int tbk_layer_attention_forward_##SFX(int64_t nb, int64_t L, int64_t N, int64_t K, int64_t D, const T *p,      \
                                      const T *h, const T *q, T *z, T *beta) {                                \
    _Pragma("omp parallel for schedule(static, 1)")                                                           \
    for (int64_t m = 0; m < nb; m++) {                                                                        \
        const int64_t r0 = N * m / nb, r1 = N * (m + 1) / nb;                                                 \
        if (K == 64 && D == 64) kernel_layer_attention_forward_##SFX(r0, r1, L, N, 64, 64, p, h, q, z, beta); \
        else kernel_layer_attention_forward_##SFX(r0, r1, L, N, K, D, p, h, q, z, beta);                      \
    }                                                                                                         \
    return 0;                                                                                                 \
}                                                                                                             \
int tbk_layer_attention_backward_##SFX(int64_t nb, int64_t L, int64_t N, int64_t K, int64_t D, const T *p,     \
                                       const T *h, const T *q, const T *beta, const T *g, T *dp, T *dh,       \
                                       double *dq) {                                                          \
    int status = 0;                                                                                           \
    _Pragma("omp parallel for schedule(static, 1) reduction(|:status)")                                       \
    for (int64_t m = 0; m < nb; m++) {                                                                        \
        const int64_t r0 = N * m / nb, r1 = N * (m + 1) / nb;                                                 \
        if (K == 64 && D == 64)                                                                               \
            status |= kernel_layer_attention_backward_##SFX(r0, r1, L, N, 64, 64, p, h, q, beta, g, dp, dh,   \
                                                            dq + m * K);                                      \
        else                                                                                                  \
            status |= kernel_layer_attention_backward_##SFX(r0, r1, L, N, K, D, p, h, q, beta, g, dp, dh,     \
                                                            dq + m * K);                                      \
    }                                                                                                         \
    return status;                                                                                            \
}

#define RN_FWD_f32(W) kernel_residual_elu_norm_forward_f32(r0, r1, W, h, c, gamma, beta, eps, out, xhat, rstd)
#define RN_FWD_f64(W) kernel_residual_elu_norm_forward_f64(r0, r1, W, h, c, gamma, beta, eps, out, xhat, rstd)
#define RN_BWD_f32(W) kernel_residual_elu_norm_backward_f32(r0, r1, W, g, c, xhat, rstd, gamma, dx, dc, dgm, dbm)
#define RN_BWD_f64(W) kernel_residual_elu_norm_backward_f64(r0, r1, W, g, c, xhat, rstd, gamma, dx, dc, dgm, dbm)

DEFINE_PARALLEL(float, f32)
DEFINE_PARALLEL(double, f64)
