/* Exphormer's typed dot-product attention: the three fused CPU kernels of gnn/backends/fused_attention.py
 * (its docstring states the math). One pass over the edges each; a caller runs row blocks [r0, r1) in
 * parallel. Layouts (row-major): q, k, v, g, out, dq, dk, dv (N, H, C); u (H, C); b (T, H, C);
 * alpha, keep (E, H) in by-target order; ad (E, 2, H): alpha and d_e (the score gradient) in by-source
 * order (position tinv[p] for by-target position p), written by backward_by_target; du (H, C), db (T, H, C)
 * accumulated (+=) by the caller's block. The GATv2 and softmax-and-sum kernels below keep their records in
 * by-target order instead and read them at tpos[r], the by-target position of by-source position r.
 * Indices: int64 row pointers, int32 sources / targets / positions, uint8 edge types. Compiled once per
 * machine by fused_attention.py. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fast_math.h"


/* Software prefetch, AHEAD edges ahead: the kernels are bound by the latency of rows gathered (and, in the
 * first backward pass, of records scattered) at random; the hardware prefetcher cannot guess those addresses,
 * but the index arrays say them in advance. PREFETCH_ROW asks for every cache line of the HC-wide row whose
 * index sits AHEAD positions after P in IDX (nothing past PEND, the end of the caller's block). */
#ifndef AHEAD
#define AHEAD 16
#endif
/* GATv2's first backward pass sums its parameter gradients per FLUSH_ROWS target rows in the working
 * precision before adding them to the block's float64 sums (per row, the flush of the NT + 2 accumulators
 * cost as much as the edges of an average row). */
#ifndef FLUSH_ROWS
#define FLUSH_ROWS 32
#endif
#define PREFETCH_ROW(BASE, IDX, P, PEND, HC)                                                                  \
    if ((P) + AHEAD < (PEND)) {                                                                               \
        const char *row_ = (const char *)((BASE) + (int64_t)(IDX)[(P) + AHEAD] * (HC));                       \
        for (int64_t off_ = 0; off_ < (int64_t)((HC) * sizeof(*(BASE))); off_ += 64)                          \
            __builtin_prefetch(row_ + off_, 0, 3);                                                            \
    }

#define DEFINE_KERNELS(T, SFX, EXP)                                                                           \
/* One target row's edge softmax, in place over alpha[p0..p1) (scores in, attention out; per head: shifted by \
 * peak, each head's largest score, then exp / (sum + 1e-16)), and acc = sum_p alpha_p x[col[p]]. */          \
static inline __attribute__((always_inline)) void                                                             \
row_softmax_sum_##SFX(int64_t p0, int64_t p1, int64_t H, int64_t C, const int32_t *restrict col,              \
                      const T *restrict x, T *restrict alpha, const T *restrict peak, T *restrict total,      \
                      T *restrict acc) {                                                                      \
    for (int64_t h = 0; h < H; h++) total[h] = 0;                                                             \
    for (int64_t p = p0; p < p1; p++)                                                                         \
        for (int64_t h = 0; h < H; h++) {                                                                     \
            const T e = EXP(alpha[p * H + h] - peak[h]);                                                      \
            alpha[p * H + h] = e;                                                                             \
            total[h] += e;                                                                                    \
        }                                                                                                     \
    for (int64_t h = 0; h < H; h++) total[h] += (T)1e-16;                                                     \
    for (int64_t c = 0; c < H * C; c++) acc[c] = 0;                                                           \
    for (int64_t p = p0; p < p1; p++) {                                                                       \
        const T *xj = x + col[p] * H * C;                                                                     \
        for (int64_t h = 0; h < H; h++) {                                                                     \
            const T a = alpha[p * H + h] / total[h];                                                          \
            alpha[p * H + h] = a;                                                                             \
            for (int64_t c = h * C; c < (h + 1) * C; c++) acc[c] += a * xj[c];                                \
        }                                                                                                     \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
/* The first half of one target row's softmax backward: t_e = alpha_e <g_i, x_j> per head, written to         \
 * slot + idx[p] * stride (the caller's record of edge p; slot + p * stride when idx is NULL), and            \
 * dot = sum_e t_e; the rows x_j are gathered and scattered records prefetched for writing, AHEAD edges ahead \
 * (PEND: the end of the caller's block). */                                                                  \
static inline __attribute__((always_inline)) void                                                             \
row_softmax_backward_##SFX(int64_t p0, int64_t p1, int64_t pend, int64_t H, int64_t C, const int32_t *restrict col,\
                           const T *restrict x, const T *restrict gi, const T *restrict alpha,                \
                           const int32_t *restrict idx, T *restrict slot, int64_t stride, T *restrict dot) {  \
    for (int64_t h = 0; h < H; h++) dot[h] = 0;                                                               \
    for (int64_t p = p0; p < p1; p++) {                                                                       \
        PREFETCH_ROW(x, col, p, pend, H * C)                                                                  \
        if (idx && p + AHEAD < pend) __builtin_prefetch(slot + (int64_t)idx[p + AHEAD] * stride, 1, 3);       \
        const T *xj = x + col[p] * H * C;                                                                     \
        T *rec = slot + (idx ? (int64_t)idx[p] : p) * stride;                                                 \
        for (int64_t h = 0; h < H; h++) {                                                                     \
            T s = 0;                                                                                          \
            for (int64_t c = h * C; c < (h + 1) * C; c++) s += gi[c] * xj[c];                                 \
            rec[h] = alpha[p * H + h] * s;                                                                    \
            dot[h] += rec[h];                                                                                 \
        }                                                                                                     \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
static inline __attribute__((always_inline)) int                                                     \
kernel_forward_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t C, int64_t NT,                               \
                      const int64_t *restrict indptr, const int32_t *restrict col, const uint8_t *restrict typ,  \
                      const T *restrict w, const T *restrict q,                     \
                      const T *restrict k, const T *restrict v, const T *restrict u, const T *restrict b,        \
                      T scale, T clamp, T *restrict out, T *restrict alpha,              \
                      uint8_t *restrict keep) {                                                                 \
    const int64_t HC = H * C, pend = indptr[r1];                                                              \
    T *qu = malloc(sizeof(T) * HC), *qb = malloc(sizeof(T) * NT * HC), *acc = malloc(sizeof(T) * HC);          \
    T *peak = malloc(sizeof(T) * H), *total = malloc(sizeof(T) * H);                                          \
    if (!qu || !qb || !acc || !peak || !total) { free(qu); free(qb); free(acc); free(peak); free(total); return 1; } \
    for (int64_t i = r0; i < r1; i++) {                                                                       \
        const int64_t p0 = indptr[i], p1 = indptr[i + 1];                                                    \
        const T *qi = q + i * HC;                                                                             \
        for (int64_t c = 0; c < HC; c++) qu[c] = qi[c] * u[c];                                                \
        for (int64_t t = 0; t < NT; t++)                                                                      \
            for (int64_t c = 0; c < HC; c++) qb[t * HC + c] = qi[c] * b[t * HC + c];                          \
        for (int64_t p = p0; p < p1; p++) {                                                                   \
            PREFETCH_ROW(k, col, p, pend, HC) PREFETCH_ROW(v, col, p, pend, HC)                               \
            const T we = w[p];                                                                                \
            const T *kj = k + col[p] * HC, *qbt = qb + typ[p] * HC;                                           \
            for (int64_t h = 0; h < H; h++) {                                                                 \
                T s = 0;                                                                                      \
                for (int64_t c = h * C; c < (h + 1) * C; c++) s += (we * qu[c] + qbt[c]) * kj[c];             \
                s *= scale;                                                                                   \
                uint8_t kept = 1;                                                                             \
                if (s > clamp) { s = clamp; kept = 0; } else if (s < -clamp) { s = -clamp; kept = 0; }        \
                keep[p * H + h] = kept;                                                                       \
                alpha[p * H + h] = s;                                                                         \
                if (p == p0 || s > peak[h]) peak[h] = s;                                                      \
            }                                                                                                 \
        }                                                                                                     \
        row_softmax_sum_##SFX(p0, p1, H, C, col, v, alpha, peak, total, acc);                                 \
        memcpy(out + i * HC, acc, sizeof(T) * HC);                                                            \
    }                                                                                                         \
    free(qu); free(qb); free(acc); free(peak); free(total);                                                   \
    return 0;                                                                                                 \
}                                                                                                             \
                                                                                                              \
static inline __attribute__((always_inline)) int                                                     \
kernel_backward_by_target_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t C, int64_t NT,                    \
                                 const int64_t *restrict indptr, const int32_t *restrict col,                 \
                                 const uint8_t *restrict typ, const T *restrict w, const T *restrict q,       \
                                 const T *restrict k, const T *restrict v, const T *restrict u,               \
                                 const T *restrict b, T scale, const T *restrict g, const T *restrict alpha,  \
                                 const uint8_t *restrict keep, const int32_t *restrict tinv, T *restrict ad,  \
                                 T *restrict dq, T *restrict du, T *restrict db) {                            \
    const int64_t HC = H * C;                                                                                 \
    const int64_t pend = indptr[r1];                                                                          \
    T *aw = malloc(sizeof(T) * HC), *at = malloc(sizeof(T) * NT * HC), *dot = malloc(sizeof(T) * H);          \
    T *d = malloc(sizeof(T) * H * (indptr[r1] - indptr[r0] + 1));                                            \
    if (!aw || !at || !dot || !d) { free(aw); free(at); free(dot); free(d); return 1; }                       \
    d -= indptr[r0] * H;  /* indexed by by-target position, like alpha */                                    \
    for (int64_t i = r0; i < r1; i++) {                                                                       \
        const int64_t p0 = indptr[i], p1 = indptr[i + 1];                                                    \
        const T *gi = g + i * HC, *qi = q + i * HC;                                                           \
        for (int64_t h = 0; h < H; h++) dot[h] = 0;                                                           \
        for (int64_t p = p0; p < p1; p++) {                                                                   \
            PREFETCH_ROW(v, col, p, pend, HC) PREFETCH_ROW(k, col, p, pend, HC)                               \
            if (p + AHEAD < pend) __builtin_prefetch(ad + (int64_t)tinv[p + AHEAD] * 2 * H, 1, 3);  /* write */ \
            const T *vj = v + col[p] * HC;                                                                    \
            for (int64_t h = 0; h < H; h++) {                                                                 \
                T s = 0;                                                                                      \
                for (int64_t c = h * C; c < (h + 1) * C; c++) s += gi[c] * vj[c];                             \
                d[p * H + h] = s;                                                                             \
                dot[h] += alpha[p * H + h] * s;                                                               \
            }                                                                                                 \
        }                                                                                                     \
        memset(aw, 0, sizeof(T) * HC);                                                                        \
        memset(at, 0, sizeof(T) * NT * HC);                                                                   \
        for (int64_t p = p0; p < p1; p++) {                                                                   \
            const T *kj = k + col[p] * HC;                                                                    \
            T *att = at + typ[p] * HC;                                                                        \
            for (int64_t h = 0; h < H; h++) {                                                                 \
                const T x = keep[p * H + h] ? alpha[p * H + h] * (d[p * H + h] - dot[h]) * scale : (T)0;      \
                const T xw = x * w[p];                                                                        \
                ad[(int64_t)tinv[p] * 2 * H + h] = alpha[p * H + h];                                                   \
                ad[(int64_t)tinv[p] * 2 * H + H + h] = x;                                                              \
                for (int64_t c = h * C; c < (h + 1) * C; c++) { aw[c] += xw * kj[c]; att[c] += x * kj[c]; }   \
            }                                                                                                 \
        }                                                                                                     \
        T *dqi = dq + i * HC;                                                                                 \
        for (int64_t c = 0; c < HC; c++) { dqi[c] = u[c] * aw[c]; du[c] += qi[c] * aw[c]; }                   \
        for (int64_t t = 0; t < NT; t++)                                                                      \
            for (int64_t c = 0; c < HC; c++) {                                                                \
                dqi[c] += b[t * HC + c] * at[t * HC + c];                                                     \
                db[t * HC + c] += qi[c] * at[t * HC + c];                                                     \
            }                                                                                                 \
    }                                                                                                         \
    free(aw); free(at); free(dot); free(d + indptr[r0] * H);                                                  \
    return 0;                                                                                                 \
}                                                                                                             \
                                                                                                              \
static inline __attribute__((always_inline)) int                                                     \
kernel_backward_by_source_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t C, int64_t NT,                    \
                                 const int64_t *restrict tptr, const int32_t *restrict tdst,                  \
                                 const uint8_t *restrict ttyp,                                                \
                                 const T *restrict tw, const T *restrict q, const T *restrict u,              \
                                 const T *restrict b, const T *restrict g, const T *restrict ad,              \
                                 T *restrict dk, T *restrict dv) {                                            \
    const int64_t HC = H * C;                                                                                 \
    const int64_t rend = tptr[r1];                                                                            \
    T *bw = malloc(sizeof(T) * HC), *bt = malloc(sizeof(T) * NT * HC), *accv = malloc(sizeof(T) * HC);        \
    if (!bw || !bt || !accv) { free(bw); free(bt); free(accv); return 1; }                                    \
    for (int64_t j = r0; j < r1; j++) {                                                                       \
        memset(bw, 0, sizeof(T) * HC);                                                                        \
        memset(bt, 0, sizeof(T) * NT * HC);                                                                   \
        memset(accv, 0, sizeof(T) * HC);                                                                      \
        for (int64_t r = tptr[j]; r < tptr[j + 1]; r++) {                                                     \
            PREFETCH_ROW(q, tdst, r, rend, HC) PREFETCH_ROW(g, tdst, r, rend, HC)                             \
            const T *qi = q + tdst[r] * HC, *gi = g + tdst[r] * HC;                                           \
            T *btt = bt + ttyp[r] * HC;                                                                       \
            for (int64_t h = 0; h < H; h++) {                                                                 \
                const T a = ad[r * 2 * H + h], x = ad[r * 2 * H + H + h], xw = x * tw[r];                     \
                for (int64_t c = h * C; c < (h + 1) * C; c++) {                                               \
                    accv[c] += a * gi[c];                                                                     \
                    bw[c] += xw * qi[c];                                                                      \
                    btt[c] += x * qi[c];                                                                      \
                }                                                                                             \
            }                                                                                                 \
        }                                                                                                     \
        T *dkj = dk + j * HC;                                                                                 \
        for (int64_t c = 0; c < HC; c++) dkj[c] = u[c] * bw[c];                                               \
        for (int64_t t = 0; t < NT; t++)                                                                      \
            for (int64_t c = 0; c < HC; c++) dkj[c] += b[t * HC + c] * bt[t * HC + c];                        \
        memcpy(dv + j * HC, accv, sizeof(T) * HC);                                                            \
    }                                                                                                         \
    free(bw); free(bt); free(accv);                                                                           \
    return 0;                                                                                                 \
}                                                                                                             \
                                                                                                              \
/* Edge softmax, then the alpha-weighted sum of source rows (GAT's aggregation; GATv2's when composed):       \
 * alpha_e = softmax over i's incoming edges of score_e (per head), out_i = sum_e alpha_e x_j. score and      \
 * dscore are (E, H) in the edge set's order (eid[p]: the edge id of by-target position p); alpha (E, H) by   \
 * target, read by the second backward pass at tpos[r]. */                                                    \
static inline __attribute__((always_inline)) int                                                              \
kernel_softmax_sum_forward_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t C, const int64_t *restrict indptr,\
                                 const int32_t *restrict col, const int32_t *restrict eid,                    \
                                 const T *restrict score, const T *restrict x, T *restrict out,               \
                                 T *restrict alpha) {                                                         \
    const int64_t HC = H * C, pend = indptr[r1];                                                              \
    T *acc = malloc(sizeof(T) * HC), *peak = malloc(sizeof(T) * H), *total = malloc(sizeof(T) * H);           \
    if (!acc || !peak || !total) { free(acc); free(peak); free(total); return 1; }                            \
    for (int64_t i = r0; i < r1; i++) {                                                                       \
        const int64_t p0 = indptr[i], p1 = indptr[i + 1];                                                     \
        for (int64_t p = p0; p < p1; p++) {                                                                   \
            PREFETCH_ROW(x, col, p, pend, HC)                                                                 \
            if (p + AHEAD < pend) __builtin_prefetch(score + (int64_t)eid[p + AHEAD] * H, 0, 3);              \
            const T *sp = score + (int64_t)eid[p] * H;                                                        \
            for (int64_t h = 0; h < H; h++) {                                                                 \
                alpha[p * H + h] = sp[h];                                                                     \
                if (p == p0 || sp[h] > peak[h]) peak[h] = sp[h];                                              \
            }                                                                                                 \
        }                                                                                                     \
        row_softmax_sum_##SFX(p0, p1, H, C, col, x, alpha, peak, total, acc);                                 \
        memcpy(out + i * HC, acc, sizeof(T) * HC);                                                            \
    }                                                                                                         \
    free(acc); free(peak); free(total);                                                                       \
    return 0;                                                                                                 \
}                                                                                                             \
                                                                                                              \
static inline __attribute__((always_inline)) int                                                              \
kernel_softmax_sum_backward_by_target_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t C,                     \
                                            const int64_t *restrict indptr, const int32_t *restrict col,      \
                                            const int32_t *restrict eid, const T *restrict x,                 \
                                            const T *restrict g, const T *restrict alpha, T *restrict dscore) { \
    const int64_t HC = H * C, pend = indptr[r1];                                                              \
    T *dot = malloc(sizeof(T) * H);                                                                           \
    if (!dot) return 1;                                                                                       \
    for (int64_t i = r0; i < r1; i++) {                                                                       \
        const int64_t p0 = indptr[i], p1 = indptr[i + 1];                                                     \
        const T *gi = g + i * HC;                                                                             \
        row_softmax_backward_##SFX(p0, p1, pend, H, C, col, x, gi, alpha, eid, dscore, H, dot);               \
        for (int64_t p = p0; p < p1; p++) {                                                                   \
            T *ds = dscore + (int64_t)eid[p] * H;                                                             \
            for (int64_t h = 0; h < H; h++) ds[h] -= alpha[p * H + h] * dot[h];                               \
        }                                                                                                     \
    }                                                                                                         \
    free(dot);                                                                                                \
    return 0;                                                                                                 \
}                                                                                                             \
                                                                                                              \
static inline __attribute__((always_inline)) int                                                              \
kernel_softmax_sum_backward_by_source_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t C,                     \
                                            const int64_t *restrict tptr, const int32_t *restrict tdst,       \
                                            const int32_t *restrict tpos, const T *restrict alpha,            \
                                            const T *restrict g, T *restrict dx) {                            \
    const int64_t HC = H * C, rend = tptr[r1];                                                                \
    T *acc = malloc(sizeof(T) * HC);                                                                          \
    if (!acc) return 1;                                                                                       \
    for (int64_t j = r0; j < r1; j++) {                                                                       \
        for (int64_t c = 0; c < HC; c++) acc[c] = 0;                                                          \
        for (int64_t r = tptr[j]; r < tptr[j + 1]; r++) {                                                     \
            PREFETCH_ROW(g, tdst, r, rend, HC)                                                                \
            if (r + AHEAD < rend) __builtin_prefetch(alpha + (int64_t)tpos[r + AHEAD] * H, 0, 3);              \
            const T *gi = g + tdst[r] * HC, *ar = alpha + (int64_t)tpos[r] * H;                               \
            for (int64_t h = 0; h < H; h++) {                                                                 \
                const T a = ar[h];                                                                            \
                for (int64_t c = h * C; c < (h + 1) * C; c++) acc[c] += a * gi[c];                            \
            }                                                                                                 \
        }                                                                                                     \
        memcpy(dx + j * HC, acc, sizeof(T) * HC);                                                             \
    }                                                                                                         \
    free(acc);                                                                                                \
    return 0;                                                                                                 \
}                                                                                                             \
                                                                                                              \
/* GATv2's attention (Brody et al.) on factored edge features: z_e = (l_j + r_i) + (w_e u + B_{t_e}),         \
 * score_e,h = sum_c att_hc LeakyReLU(z_e,hc), alpha = softmax over i's incoming edges, out_i = sum_e alpha_e l_j.\
 * Backward: t_e = alpha_e <g_i, l_j>, ds_e = t_e - alpha_e sum_{e'->i} t_e', dz_e = ds_e att LeakyReLU'(z_e);\
 * dr_i = sum_{e->i} dz_e, du = sum_e w_e dz_e, dB_t = sum_{t_e=t} dz_e, datt = sum_e ds_e LeakyReLU(z_e) (by \
 * target; the parameter sums per block), dl_j = sum_{e=(j->i)} alpha_e g_i + dz_e (by source, from the       \
 * (alpha, ds) records the first backward pass writes in by-target order, read at tpos, as for Exphormer). */ \
static inline __attribute__((always_inline)) int                                                              \
kernel_gatv2_forward_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t C, int64_t NT,                          \
                           const int64_t *restrict indptr, const int32_t *restrict col, const uint8_t *restrict typ,\
                           const T *restrict w, const T *restrict l, const T *restrict r, const T *restrict u,\
                           const T *restrict b, const T *restrict att, T slope, T *restrict out,              \
                           T *restrict alpha) {                                                               \
    const int64_t HC = H * C, pend = indptr[r1];                                                              \
    T *acc = malloc(sizeof(T) * HC), *peak = malloc(sizeof(T) * H), *total = malloc(sizeof(T) * H);           \
    if (!acc || !peak || !total) { free(acc); free(peak); free(total); return 1; }                            \
    for (int64_t i = r0; i < r1; i++) {                                                                       \
        const int64_t p0 = indptr[i], p1 = indptr[i + 1];                                                     \
        const T *ri = r + i * HC;                                                                             \
        for (int64_t p = p0; p < p1; p++) {                                                                   \
            PREFETCH_ROW(l, col, p, pend, HC)                                                                 \
            const T we = w[p], *lj = l + col[p] * HC, *bt = b + typ[p] * HC;                                  \
            for (int64_t h = 0; h < H; h++) {                                                                 \
                T s = 0;                                                                                      \
                for (int64_t c = h * C; c < (h + 1) * C; c++) {                                               \
                    const T z = (lj[c] + ri[c]) + (we * u[c] + bt[c]);                                        \
                    s += att[c] * (z > 0 ? z : z * slope);                                                    \
                }                                                                                             \
                alpha[p * H + h] = s;                                                                         \
                if (p == p0 || s > peak[h]) peak[h] = s;                                                      \
            }                                                                                                 \
        }                                                                                                     \
        row_softmax_sum_##SFX(p0, p1, H, C, col, l, alpha, peak, total, acc);                                 \
        memcpy(out + i * HC, acc, sizeof(T) * HC);                                                            \
    }                                                                                                         \
    free(acc); free(peak); free(total);                                                                       \
    return 0;                                                                                                 \
}                                                                                                             \
                                                                                                              \
static inline __attribute__((always_inline)) int                                                              \
kernel_gatv2_backward_by_target_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t C, int64_t NT,               \
                                      const int64_t *restrict indptr, const int32_t *restrict col,            \
                                      const uint8_t *restrict typ, const T *restrict w, const T *restrict l,  \
                                      const T *restrict r, const T *restrict u, const T *restrict b,          \
                                      const T *restrict att, T slope, const T *restrict g,                    \
                                      const T *restrict alpha, T *restrict ad, T *restrict dr,                \
                                      double *restrict du, double *restrict db, double *restrict datt) {      \
    const int64_t HC = H * C;                                                                                 \
    /* the parameter sums run over every edge of the block: in T over FLUSH_ROWS rows at a time (their        \
     * att factor applied then), across those groups in double */                                             \
    T *dot = malloc(sizeof(T) * H), *dri = malloc(sizeof(T) * HC), *rdu = malloc(sizeof(T) * HC);             \
    T *rdb = malloc(sizeof(T) * NT * HC), *rdatt = malloc(sizeof(T) * HC);                                    \
    if (!dot || !dri || !rdu || !rdb || !rdatt) {                                                             \
        free(dot); free(dri); free(rdu); free(rdb); free(rdatt);                                              \
        return 1;                                                                                             \
    }                                                                                                         \
    for (int64_t c = 0; c < HC; c++) { rdu[c] = 0; rdatt[c] = 0; }                                            \
    for (int64_t c = 0; c < NT * HC; c++) rdb[c] = 0;                                                         \
    for (int64_t i = r0; i < r1; i++) {                                                                       \
        const int64_t p0 = indptr[i], p1 = indptr[i + 1];                                                     \
        const T *gi = g + i * HC, *ri = r + i * HC;                                                           \
        row_softmax_backward_##SFX(p0, p1, indptr[r1], H, C, col, l, gi, alpha, NULL, ad + H, 2 * H, dot);    \
        for (int64_t c = 0; c < HC; c++) dri[c] = 0;                                                          \
        for (int64_t p = p0; p < p1; p++) {                                                                   \
            const T we = w[p], *lj = l + col[p] * HC, *bt = b + typ[p] * HC;                                  \
            T *rec = ad + p * 2 * H, *dbt = rdb + typ[p] * HC;                                                \
            for (int64_t h = 0; h < H; h++) {                                                                 \
                const T a = alpha[p * H + h], ds = rec[H + h] - a * dot[h], ds_neg = ds * slope;              \
                rec[h] = a;                                                                                   \
                rec[H + h] = ds;                                                                              \
                for (int64_t c = h * C; c < (h + 1) * C; c++) {                                               \
                    /* m = ds LeakyReLU'(z): dz = att m, and ds LeakyReLU(z) = m z, so att multiplies the     \
                     * row's sums once at its end (below) instead of every edge */                            \
                    const T z = (lj[c] + ri[c]) + (we * u[c] + bt[c]);                                        \
                    const T m = z > 0 ? ds : ds_neg;                                                          \
                    rdatt[c] += m * z;                                                                        \
                    dri[c] += m;                                                                              \
                    rdu[c] += we * m;                                                                         \
                    dbt[c] += m;                                                                              \
                }                                                                                             \
            }                                                                                                 \
        }                                                                                                     \
        for (int64_t c = 0; c < HC; c++) dr[i * HC + c] = att[c] * dri[c];                                    \
        if ((i - r0) % FLUSH_ROWS == FLUSH_ROWS - 1 || i == r1 - 1) {                                         \
            for (int64_t c = 0; c < HC; c++) {                                                                \
                du[c] += att[c] * rdu[c];                                                                     \
                datt[c] += rdatt[c];                                                                          \
                rdu[c] = 0;                                                                                   \
                rdatt[c] = 0;                                                                                 \
            }                                                                                                 \
            for (int64_t t = 0; t < NT; t++)                                                                  \
                for (int64_t c = 0; c < HC; c++) {                                                            \
                    db[t * HC + c] += att[c] * rdb[t * HC + c];                                               \
                    rdb[t * HC + c] = 0;                                                                      \
                }                                                                                             \
        }                                                                                                     \
    }                                                                                                         \
    free(dot); free(dri); free(rdu); free(rdb); free(rdatt);                                                  \
    return 0;                                                                                                 \
}                                                                                                             \
                                                                                                              \
static inline __attribute__((always_inline)) int                                                              \
kernel_gatv2_backward_by_source_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t C, int64_t NT,               \
                                      const int64_t *restrict tptr, const int32_t *restrict tdst,             \
                                      const uint8_t *restrict ttyp, const T *restrict tw, const T *restrict l,\
                                      const T *restrict r, const T *restrict u, const T *restrict b,          \
                                      const T *restrict att, T slope, const T *restrict g,                    \
                                      const int32_t *restrict tpos, const T *restrict ad, T *restrict dl) {   \
    const int64_t HC = H * C, rend = tptr[r1];                                                                \
    T *acc = malloc(sizeof(T) * HC);                                                                          \
    if (!acc) return 1;                                                                                       \
    for (int64_t j = r0; j < r1; j++) {                                                                       \
        const T *lj = l + j * HC;                                                                             \
        for (int64_t c = 0; c < HC; c++) acc[c] = 0;                                                          \
        for (int64_t q = tptr[j]; q < tptr[j + 1]; q++) {                                                     \
            PREFETCH_ROW(g, tdst, q, rend, HC) PREFETCH_ROW(r, tdst, q, rend, HC)                             \
            if (q + AHEAD < rend) __builtin_prefetch(ad + (int64_t)tpos[q + AHEAD] * 2 * H, 0, 3);             \
            const T we = tw[q], *gi = g + tdst[q] * HC, *ri = r + tdst[q] * HC, *bt = b + ttyp[q] * HC;       \
            const T *rec = ad + (int64_t)tpos[q] * 2 * H;                                                     \
            for (int64_t h = 0; h < H; h++) {                                                                 \
                const T a = rec[h], ds = rec[H + h];                                                          \
                for (int64_t c = h * C; c < (h + 1) * C; c++) {                                               \
                    const T z = (lj[c] + ri[c]) + (we * u[c] + bt[c]);                                        \
                    acc[c] += a * gi[c] + (z > 0 ? ds * att[c] : ds * att[c] * slope);                        \
                }                                                                                             \
            }                                                                                                 \
        }                                                                                                     \
        memcpy(dl + j * HC, acc, sizeof(T) * HC);                                                             \
    }                                                                                                         \
    free(acc);                                                                                                \
    return 0;                                                                                                 \
}

/* Per row block: float32 (what training runs in) gets the common (heads, head width) pairs as compile-time
 * constants, so the per-head loops unroll into a few vector instructions and the row accumulators stay in
 * registers; other shapes, and float64, run the same code with run-time sizes. */
#define SHAPES_f32(CALL, SFX)                                                                                 \
    if (H == 2 && C == 32) return CALL(SFX, 2, 32);                                                           \
    if (H == 1 && C == 64) return CALL(SFX, 1, 64);                                                           \
    if (H == 4 && C == 16) return CALL(SFX, 4, 16);                                                           \
    if (H == 8 && C == 8) return CALL(SFX, 8, 8);                                                             \
    if (H == 1 && C == 32) return CALL(SFX, 1, 32);                                                           \
    if (H == 2 && C == 16) return CALL(SFX, 2, 16);                                                           \
    if (H == 4 && C == 8) return CALL(SFX, 4, 8);                                                             \
    if (H == 1 && C == 128) return CALL(SFX, 1, 128);                                                         \
    if (H == 2 && C == 64) return CALL(SFX, 2, 64);                                                           \
    if (H == 4 && C == 32) return CALL(SFX, 4, 32);                                                           \
    if (H == 8 && C == 16) return CALL(SFX, 8, 16);                                                           \
    return CALL(SFX, H, C);
#define SHAPES_f64(CALL, SFX) return CALL(SFX, H, C);
#define FWD(SFX, HH, CC) kernel_forward_##SFX(r0, r1, HH, CC, NT, indptr, col, typ, w, q, k, v, u, b, scale,     \
                                              clamp, out, alpha, keep)
#define BWT(SFX, HH, CC) kernel_backward_by_target_##SFX(r0, r1, HH, CC, NT, indptr, col, typ, w, q, k, v, u, b,  \
                                                         scale, g, alpha, keep, tinv, ad, dq, du, db)
#define BWS(SFX, HH, CC) kernel_backward_by_source_##SFX(r0, r1, HH, CC, NT, tptr, tdst, ttyp, tw, q, u, b, g,   \
                                                         ad, dk, dv)

#define SSF(SFX, HH, CC) kernel_softmax_sum_forward_##SFX(r0, r1, HH, CC, indptr, col, eid, score, x, out, alpha)
#define SSBT(SFX, HH, CC) kernel_softmax_sum_backward_by_target_##SFX(r0, r1, HH, CC, indptr, col, eid, x, g, alpha,  \
                                                                    dscore)
#define SSBS(SFX, HH, CC) kernel_softmax_sum_backward_by_source_##SFX(r0, r1, HH, CC, tptr, tdst, tpos, alpha, g, dx)

#define GF(SFX, HH, CC) kernel_gatv2_forward_##SFX(r0, r1, HH, CC, NT, indptr, col, typ, w, l, r, u, b, att, slope, \
                                                 out, alpha)
#define GBT(SFX, HH, CC) kernel_gatv2_backward_by_target_##SFX(r0, r1, HH, CC, NT, indptr, col, typ, w, l, r, u, b,  \
                                                            att, slope, g, alpha, ad, dr, du, db, datt)
#define GBS(SFX, HH, CC) kernel_gatv2_backward_by_source_##SFX(r0, r1, HH, CC, NT, tptr, tdst, ttyp, tw, l, r, u, b, \
                                                            att, slope, g, tpos, ad, dl)

#define DEFINE_BLOCKS(T, SFX)                                                                                 \
static int block_forward_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t C, int64_t NT, const int64_t *indptr, \
                               const int32_t *col, const uint8_t *typ, const T *w, const T *q, const T *k,     \
                               const T *v, const T *u, const T *b, T scale, T clamp, T *out, T *alpha,         \
                               uint8_t *keep) {                                                                \
    SHAPES_##SFX(FWD, SFX)                                                                                    \
}                                                                                                             \
static int block_backward_by_target_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t C, int64_t NT,          \
                                          const int64_t *indptr, const int32_t *col, const uint8_t *typ,      \
                                          const T *w, const T *q, const T *k, const T *v, const T *u,         \
                                          const T *b, T scale, const T *g, const T *alpha,                    \
                                          const uint8_t *keep, const int32_t *tinv, T *ad, T *dq, T *du,      \
                                          T *db) {                                                            \
    SHAPES_##SFX(BWT, SFX)                                                                                    \
}                                                                                                             \
static int block_backward_by_source_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t C, int64_t NT,          \
                                          const int64_t *tptr, const int32_t *tdst, const uint8_t *ttyp,      \
                                          const T *tw, const T *q, const T *u, const T *b, const T *g,        \
                                          const T *ad, T *dk, T *dv) {                                        \
    SHAPES_##SFX(BWS, SFX)                                                                                    \
}                                                                                                             \
static int block_softmax_sum_forward_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t C, const int64_t *indptr,\
                                           const int32_t *col, const int32_t *eid, const T *score, const T *x,\
                                           T *out, T *alpha) {                                                \
    SHAPES_##SFX(SSF, SFX)                                                                                    \
}                                                                                                             \
static int block_softmax_sum_backward_by_target_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t C,           \
                                                      const int64_t *indptr, const int32_t *col, const int32_t *eid,\
                                                      const T *x, const T *g, const T *alpha, T *dscore) {    \
    SHAPES_##SFX(SSBT, SFX)                                                                                   \
}                                                                                                             \
static int block_softmax_sum_backward_by_source_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t C,           \
                                                      const int64_t *tptr, const int32_t *tdst,               \
                                                      const int32_t *tpos, const T *alpha, const T *g, T *dx) {\
    SHAPES_##SFX(SSBS, SFX)                                                                                   \
}                                                                                                             \
static int block_gatv2_forward_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t C, int64_t NT, const int64_t *indptr,\
                                     const int32_t *col, const uint8_t *typ, const T *w, const T *l, const T *r,\
                                     const T *u, const T *b, const T *att, T slope, T *out, T *alpha) {       \
    SHAPES_##SFX(GF, SFX)                                                                                     \
}                                                                                                             \
static int block_gatv2_backward_by_target_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t C, int64_t NT,     \
                                                const int64_t *indptr, const int32_t *col, const uint8_t *typ,\
                                                const T *w, const T *l, const T *r, const T *u, const T *b,   \
                                                const T *att, T slope, const T *g, const T *alpha,            \
                                                T *ad, T *dr, double *du, double *db, double *datt) {         \
    SHAPES_##SFX(GBT, SFX)                                                                                    \
}                                                                                                             \
static int block_gatv2_backward_by_source_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t C, int64_t NT,     \
                                                const int64_t *tptr, const int32_t *tdst, const uint8_t *ttyp,\
                                                const T *tw, const T *l, const T *r, const T *u, const T *b,  \
                                                const T *att, T slope, const T *g, const int32_t *tpos,       \
                                                const T *ad, T *dl) {                                         \
    SHAPES_##SFX(GBS, SFX)                                                                                    \
}

DEFINE_KERNELS(float, f32, exp_nonpos_f32)   /* softmax arguments are s - max <= 0 */
DEFINE_KERNELS(double, f64, exp)
DEFINE_BLOCKS(float, f32)
DEFINE_BLOCKS(double, f64)

/* What the caller calls: the row blocks bounds[0..nb] (about equal edge counts), one OpenMP thread each --
 * the OpenMP runtime torch itself runs on (libgomp.so.1, already loaded), so the kernels share its threads
 * instead of competing with them. backward_by_target's block m accumulates into du + m H C, db + m NT H C.
 * Returns nonzero when a block could not allocate its row buffers. */
#define DEFINE_PARALLEL(T, SFX)                                                                               \
int txk_forward_##SFX(int64_t nb, const int64_t *bounds, int64_t H, int64_t C, int64_t NT,                    \
                      const int64_t *indptr, const int32_t *col, const uint8_t *typ, const T *w, const T *q,     \
                      const T *k, const T *v, const T *u, const T *b, T scale, T clamp, T *out, T *alpha,        \
                      uint8_t *keep) {                                                                          \
    int status = 0;                                                                                           \
    _Pragma("omp parallel for schedule(static, 1) reduction(|:status)")                                       \
    for (int64_t m = 0; m < nb; m++)                                                                          \
        status |= block_forward_##SFX(bounds[m], bounds[m + 1], H, C, NT, indptr, col, typ, w, q, k, v, u, b, \
                                      scale, clamp, out, alpha, keep);                                        \
    return status;                                                                                            \
}                                                                                                             \
int txk_backward_by_target_##SFX(int64_t nb, const int64_t *bounds, int64_t H, int64_t C, int64_t NT,         \
                                 const int64_t *indptr, const int32_t *col, const uint8_t *typ, const T *w,   \
                                 const T *q, const T *k, const T *v, const T *u, const T *b, T scale,         \
                                 const T *g, const T *alpha, const uint8_t *keep, const int32_t *tinv, T *ad, \
                                 T *dq, T *du, T *db) {                                                       \
    int status = 0;                                                                                           \
    _Pragma("omp parallel for schedule(static, 1) reduction(|:status)")                                       \
    for (int64_t m = 0; m < nb; m++)                                                                          \
        status |= block_backward_by_target_##SFX(bounds[m], bounds[m + 1], H, C, NT, indptr, col, typ, w, q,  \
                                                 k, v, u, b, scale, g, alpha, keep, tinv, ad, dq, du + m * H * C, \
                                                 db + m * NT * H * C);                                        \
    return status;                                                                                            \
}                                                                                                             \
int txk_backward_by_source_##SFX(int64_t nb, const int64_t *bounds, int64_t H, int64_t C, int64_t NT,         \
                                 const int64_t *tptr, const int32_t *tdst, const uint8_t *ttyp, const T *tw,  \
                                 const T *q, const T *u, const T *b, const T *g, const T *ad, T *dk, T *dv) { \
    int status = 0;                                                                                           \
    _Pragma("omp parallel for schedule(static, 1) reduction(|:status)")                                       \
    for (int64_t m = 0; m < nb; m++)                                                                          \
        status |= block_backward_by_source_##SFX(bounds[m], bounds[m + 1], H, C, NT, tptr, tdst, ttyp, tw, q, \
                                                 u, b, g, ad, dk, dv);                                        \
    return status;                                                                                            \
}                                                                                                             \
int txk_softmax_sum_forward_##SFX(int64_t nb, const int64_t *bounds, int64_t H, int64_t C, const int64_t *indptr,\
                                  const int32_t *col, const int32_t *eid, const T *score, const T *x, T *out, \
                                  T *alpha) {                                                                 \
    int status = 0;                                                                                           \
    _Pragma("omp parallel for schedule(static, 1) reduction(|:status)")                                       \
    for (int64_t m = 0; m < nb; m++)                                                                          \
        status |= block_softmax_sum_forward_##SFX(bounds[m], bounds[m + 1], H, C, indptr, col, eid, score, x, out,\
                                                  alpha);                                                     \
    return status;                                                                                            \
}                                                                                                             \
int txk_softmax_sum_backward_by_target_##SFX(int64_t nb, const int64_t *bounds, int64_t H, int64_t C,         \
                                             const int64_t *indptr, const int32_t *col, const int32_t *eid,   \
                                             const T *x, const T *g, const T *alpha, T *dscore) {             \
    int status = 0;                                                                                           \
    _Pragma("omp parallel for schedule(static, 1) reduction(|:status)")                                       \
    for (int64_t m = 0; m < nb; m++)                                                                          \
        status |= block_softmax_sum_backward_by_target_##SFX(bounds[m], bounds[m + 1], H, C, indptr, col, eid, x, \
                                                             g, alpha, dscore);                               \
    return status;                                                                                            \
}                                                                                                             \
int txk_softmax_sum_backward_by_source_##SFX(int64_t nb, const int64_t *bounds, int64_t H, int64_t C,         \
                                             const int64_t *tptr, const int32_t *tdst, const int32_t *tpos,   \
                                             const T *alpha, const T *g, T *dx) {                             \
    int status = 0;                                                                                           \
    _Pragma("omp parallel for schedule(static, 1) reduction(|:status)")                                       \
    for (int64_t m = 0; m < nb; m++)                                                                          \
        status |= block_softmax_sum_backward_by_source_##SFX(bounds[m], bounds[m + 1], H, C, tptr, tdst, tpos, alpha,\
                                                             g, dx);                                          \
    return status;                                                                                            \
}                                                                                                             \
int txk_gatv2_forward_##SFX(int64_t nb, const int64_t *bounds, int64_t H, int64_t C, int64_t NT, const int64_t *indptr,\
                            const int32_t *col, const uint8_t *typ, const T *w, const T *l, const T *r, const T *u,\
                            const T *b, const T *att, T slope, T *out, T *alpha) {                            \
    int status = 0;                                                                                           \
    _Pragma("omp parallel for schedule(static, 1) reduction(|:status)")                                       \
    for (int64_t m = 0; m < nb; m++)                                                                          \
        status |= block_gatv2_forward_##SFX(bounds[m], bounds[m + 1], H, C, NT, indptr, col, typ, w, l, r, u, b, att,\
                                            slope, out, alpha);                                               \
    return status;                                                                                            \
}                                                                                                             \
int txk_gatv2_backward_by_target_##SFX(int64_t nb, const int64_t *bounds, int64_t H, int64_t C, int64_t NT,   \
                                       const int64_t *indptr, const int32_t *col, const uint8_t *typ, const T *w,\
                                       const T *l, const T *r, const T *u, const T *b, const T *att, T slope, \
                                       const T *g, const T *alpha, T *ad, T *dr, double *du, double *db,      \
                                       double *datt) {                                                        \
    int status = 0;                                                                                           \
    _Pragma("omp parallel for schedule(static, 1) reduction(|:status)")                                       \
    for (int64_t m = 0; m < nb; m++)                                                                          \
        status |= block_gatv2_backward_by_target_##SFX(bounds[m], bounds[m + 1], H, C, NT, indptr, col, typ, w, l, r,\
                                                       u, b, att, slope, g, alpha, ad, dr, du + m * H * C,    \
                                                       db + m * NT * H * C, datt + m * H * C);                \
    return status;                                                                                            \
}                                                                                                             \
int txk_gatv2_backward_by_source_##SFX(int64_t nb, const int64_t *bounds, int64_t H, int64_t C, int64_t NT,   \
                                       const int64_t *tptr, const int32_t *tdst, const uint8_t *ttyp, const T *tw,\
                                       const T *l, const T *r, const T *u, const T *b, const T *att, T slope, \
                                       const T *g, const int32_t *tpos, const T *ad, T *dl) {                 \
    int status = 0;                                                                                           \
    _Pragma("omp parallel for schedule(static, 1) reduction(|:status)")                                       \
    for (int64_t m = 0; m < nb; m++)                                                                          \
        status |= block_gatv2_backward_by_source_##SFX(bounds[m], bounds[m + 1], H, C, NT, tptr, tdst, ttyp, tw, l,\
                                                       r, u, b, att, slope, g, tpos, ad, dl);                 \
    return status;                                                                                            \
}

DEFINE_PARALLEL(float, f32)
DEFINE_PARALLEL(double, f64)
