/* Fused multi-tensor Lion step for CPU tensors.
 *
 * One call updates every (param, grad, momentum) triple of a group: the tensors are cut into
 * fixed-size chunks, the chunks are shared among OpenMP threads, and each element is read once
 * and written once (read p, g, m; write p, m = 20 bytes per fp32 parameter). That is the whole
 * point: Lion moves 29% fewer bytes than AdamW, and only a single pass turns that into time.
 *
 * The arithmetic mirrors optforge's foreach path op for op (same formulas, same roundings, the
 * same fma in lerp as ATen's vectorised lerp), so the paths agree to the last bit on fp32:
 *   c = lerp(m, g, 1 - beta1)             u = sign(c)   (sign(NaN) = 0, as torch.sign)
 *   cautious: u *= [u*g > 0] / max(mean([u*g > 0]), 1e-3)   (per tensor)
 *   p = fma(-lr, u, p * (1 - lr*wd))      (ATen's vectorised add with alpha is an fma)
 *   m = lerp(m, g, 1 - beta2)
 * Low-precision storage (bf16, fp16) is computed in fp32 and rounded once, to nearest even.
 * Compiled at first use by optforge.optim.kernels.cpu (-O3 -march=native -fopenmp).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 16384

/* ---- storage types: load to the compute type, store with round-to-nearest-even ---- */
static inline float load_f32(const float* x, int64_t i) { return x[i]; }
static inline void store_f32(float* x, int64_t i, float v) { x[i] = v; }
static inline double load_f64(const double* x, int64_t i) { return x[i]; }
static inline void store_f64(double* x, int64_t i, double v) { x[i] = v; }

static inline float load_bf16(const uint16_t* x, int64_t i) {
    uint32_t u = (uint32_t)x[i] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline void store_bf16(uint16_t* x, int64_t i, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  /* NaN: keep it a (quiet) NaN */
        x[i] = (uint16_t)((u >> 16) | 0x40u);
        return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    x[i] = (uint16_t)(u >> 16);
}
static inline float load_f16(const _Float16* x, int64_t i) { return (float)x[i]; }
static inline void store_f16(_Float16* x, int64_t i, float v) { x[i] = (_Float16)v; }

/* ---- the elementwise math, shared by every dtype combination ---- */
#define SIGN(c) ((c) > 0 ? 1 : ((c) < 0 ? -1 : 0))

/* ATen's lerp: weight < 0.5 -> start + w*(end-start), else end - (end-start)*(1-w), fused. */
#define LERP(FMA, start, end, w, small) \
    ((small) ? FMA((w), (end) - (start), (start)) : FMA((w) - 1, (end) - (start), (end)))

/* Chunk k of the flattened tensor list -> (tensor t, [lo, hi)). starts has nt+1 entries. */
static inline void locate(const int64_t* starts, const int64_t* numel, int64_t k, int64_t* t,
                          int64_t* lo, int64_t* hi) {
    while (starts[*t + 1] <= k) ++*t;
    while (starts[*t] > k) --*t;
    *lo = (k - starts[*t]) * CHUNK;
    *hi = *lo + CHUNK < numel[*t] ? *lo + CHUNK : numel[*t];
}

/* DEFINE_LION(name, P storage, M storage, compute type, fma) expands to
 *   int name(nt, table, lr, w1, w2, decay, maximize, cautious, nthreads)
 * where table holds 4*nt int64: nt param addresses, nt grad addresses, nt momentum addresses,
 * nt element counts (one flat table: the cheapest thing to build from Python). Returns 0 on
 * success, 1 if scratch memory could not be allocated.
 * The per-element loop is a separate always-inline function called with literal flags, so each
 * (cautious, lerp branch) combination is compiled branch-free: a flag tested inside the loop
 * stops gcc from vectorising it (measured: 8x slower). */
#define DEFINE_LION(NAME, PT, PS, MT, MS, CT, FMA)                                               \
    static inline __attribute__((always_inline)) void NAME##_chunk(                            \
        PT* restrict p, const PT* restrict g, MT* restrict m, int64_t lo, int64_t hi, CT gsign,  \
        CT nlr, CT w1, CT w2, CT decay, CT sc, const int cautious, const int small1,             \
        const int small2) {                                                                     \
        _Pragma("omp simd") for (int64_t i = lo; i < hi; ++i) {                                 \
            CT gi = gsign * load_##PS(g, i), mi = load_##MS(m, i);                              \
            CT u = (CT)SIGN(LERP(FMA, mi, gi, w1, small1));                                      \
            if (cautious) u = u * gi > 0 ? u * sc : (CT)0;                                      \
            store_##PS(p, i, FMA(nlr, u, load_##PS(p, i) * decay));                             \
            store_##MS(m, i, LERP(FMA, mi, gi, w2, small2));                                    \
        }                                                                                       \
    }                                                                                           \
    int NAME(int64_t nt, const int64_t* table, double lr_, double w1_, double w2_,             \
             double decay_, int maximize, int cautious, int nthreads) {                         \
        const int64_t* numel = table + 3 * nt;                                                  \
        const CT nlr = (CT)(-lr_), w1 = (CT)w1_, w2 = (CT)w2_, decay = (CT)decay_;             \
        const int small1 = fabs(w1_) < 0.5, small2 = fabs(w2_) < 0.5;                          \
        const int variant = (cautious ? 4 : 0) | (small1 ? 2 : 0) | (small2 ? 1 : 0);            \
        const CT gsign = maximize ? (CT)-1 : (CT)1;                                             \
        int64_t* starts = malloc(sizeof(int64_t) * (nt + 1));                                  \
        if (!starts) return 1;                                                                  \
        starts[0] = 0;                                                                          \
        for (int64_t t = 0; t < nt; ++t) starts[t + 1] = starts[t] + (numel[t] + CHUNK - 1) / CHUNK; \
        const int64_t total = starts[nt];                                                       \
        int64_t* agree = NULL; /* cautious: per-chunk count of u*g > 0 */                      \
        CT* scale = NULL;      /* cautious: per-tensor 1 / max(mean(mask), 1e-3) */            \
        if (cautious) {                                                                         \
            agree = malloc(sizeof(int64_t) * (total + 1));                                      \
            scale = malloc(sizeof(CT) * (nt + 1));                                              \
            if (!agree || !scale) { free(starts); free(agree); free(scale); return 1; }         \
        }                                                                                       \
        _Pragma("omp parallel num_threads(nthreads)") {                                         \
            int64_t t = 0, lo, hi;                                                              \
            if (cautious) {                                                                     \
                _Pragma("omp for schedule(static)") for (int64_t k = 0; k < total; ++k) {       \
                    locate(starts, numel, k, &t, &lo, &hi);                                     \
                    const PT* g = (const PT*)(uintptr_t)table[nt + t];                          \
                    const MT* m = (const MT*)(uintptr_t)table[2 * nt + t];                      \
                    int64_t n = 0;                                                              \
                    for (int64_t i = lo; i < hi; ++i) {                                         \
                        CT gi = gsign * load_##PS(g, i), mi = load_##MS(m, i);                  \
                        CT c = LERP(FMA, mi, gi, w1, small1);                                   \
                        n += (CT)SIGN(c) * gi > 0;                                              \
                    }                                                                           \
                    agree[k] = n;                                                               \
                }                                                                               \
                _Pragma("omp single") for (int64_t s = 0; s < nt; ++s) {                        \
                    int64_t n = 0;                                                              \
                    for (int64_t k = starts[s]; k < starts[s + 1]; ++k) n += agree[k];          \
                    CT mean = numel[s] ? (CT)n / (CT)numel[s] : (CT)0;                          \
                    scale[s] = (CT)1 / (mean > (CT)1e-3 ? mean : (CT)1e-3);                     \
                }                                                                               \
            }                                                                                   \
            _Pragma("omp for schedule(static)") for (int64_t k = 0; k < total; ++k) {           \
                locate(starts, numel, k, &t, &lo, &hi);                                         \
                const CT sc = cautious ? scale[t] : (CT)1;                                      \
                PT* p = (PT*)(uintptr_t)table[t];                                               \
                const PT* g = (const PT*)(uintptr_t)table[nt + t];                              \
                MT* m = (MT*)(uintptr_t)table[2 * nt + t];                                      \
                switch (variant) {                                                              \
                    case 0: NAME##_chunk(p, g, m, lo, hi, gsign, nlr, w1, w2, decay, sc, 0, 0, 0); break; \
                    case 1: NAME##_chunk(p, g, m, lo, hi, gsign, nlr, w1, w2, decay, sc, 0, 0, 1); break; \
                    case 2: NAME##_chunk(p, g, m, lo, hi, gsign, nlr, w1, w2, decay, sc, 0, 1, 0); break; \
                    case 3: NAME##_chunk(p, g, m, lo, hi, gsign, nlr, w1, w2, decay, sc, 0, 1, 1); break; \
                    case 4: NAME##_chunk(p, g, m, lo, hi, gsign, nlr, w1, w2, decay, sc, 1, 0, 0); break; \
                    case 5: NAME##_chunk(p, g, m, lo, hi, gsign, nlr, w1, w2, decay, sc, 1, 0, 1); break; \
                    case 6: NAME##_chunk(p, g, m, lo, hi, gsign, nlr, w1, w2, decay, sc, 1, 1, 0); break; \
                    default: NAME##_chunk(p, g, m, lo, hi, gsign, nlr, w1, w2, decay, sc, 1, 1, 1); break; \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        free(starts); free(agree); free(scale);                                                 \
        return 0;                                                                               \
    }

/* name: lion_<param storage>_<momentum storage> */
DEFINE_LION(lion_f32_f32, float, f32, float, f32, float, fmaf)
DEFINE_LION(lion_f32_bf16, float, f32, uint16_t, bf16, float, fmaf)
DEFINE_LION(lion_f32_f16, float, f32, _Float16, f16, float, fmaf)
DEFINE_LION(lion_bf16_bf16, uint16_t, bf16, uint16_t, bf16, float, fmaf)
DEFINE_LION(lion_bf16_f32, uint16_t, bf16, float, f32, float, fmaf)
DEFINE_LION(lion_f16_f16, _Float16, f16, _Float16, f16, float, fmaf)
DEFINE_LION(lion_f16_f32, _Float16, f16, float, f32, float, fmaf)
DEFINE_LION(lion_f64_f64, double, f64, double, f64, double, fma)
