/* The micro-kernels of cnnc's direct convolution (_direct_convolution.pxi): register tiles
 * written with explicit vectors, as wide as the build's instruction set (cnnc._builds).
 *
 * - A pixel tile computes a few output pixels for a block of filters: the filters of one
 *   tap are one or two vectors, each pixel's input value is broadcast and multiplied into
 *   its accumulators (the forward pass, and the input gradient as a forward pass).
 * - A tap tile sums, for a few taps and a block of filters, input times output gradient
 *   over many pixels (the filter gradient).
 *
 * Each tile is instantiated for every count of pixels (or taps) up to the most that fit
 * the registers, so that a row of any width is cut into nearly equal tiles instead of
 * full tiles and a wasteful rest. Builds with FMA fuse each multiply-add; the baseline
 * multiplies and adds. Compilers without GCC's vector extensions get vectors of one
 * element: the same loops, scalar.
 *
 * Filters are stored (patch, w_stride), patch = kh * kw * C in (row, column, channel)
 * order; images and gradients are NHWC. Every pointer is already offset to its block. */
#ifndef CNNC_DIRECT_CONV_H
#define CNNC_DIRECT_CONV_H

#include <stddef.h>
#include <string.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* Bytes per vector, and the most pixels (taps) a tile of two vectors of filters (WIDE) or
 * one (NARROW) holds: as many accumulators as leave registers for the filters and the
 * broadcast value (32 vector registers with AVX-512, 16 otherwise). */
#if defined(__AVX512F__)
#define CNNC_VECTOR_BYTES 64
#define CNNC_WIDE_MOST 12
#define CNNC_NARROW_MOST 16
#elif defined(__AVX2__)
#define CNNC_VECTOR_BYTES 32
#define CNNC_WIDE_MOST 6
#define CNNC_NARROW_MOST 12
#else
#define CNNC_VECTOR_BYTES 16
#define CNNC_WIDE_MOST 6
#define CNNC_NARROW_MOST 12
#endif

#if defined(__GNUC__) || defined(__clang__)
typedef float cnnc_vf __attribute__((vector_size(CNNC_VECTOR_BYTES)));
typedef double cnnc_vd __attribute__((vector_size(CNNC_VECTOR_BYTES)));
#else
typedef float cnnc_vf;
typedef double cnnc_vd;
#endif
#define CNNC_LANES(V, T) ((ptrdiff_t)(sizeof(V) / sizeof(T)))
/* the loops over a tile's accumulators unrolled, so that they stay in registers */
#if defined(__GNUC__) && !defined(__clang__)
#define CNNC_UNROLL _Pragma("GCC unroll 16")
#elif defined(__clang__)
#define CNNC_UNROLL _Pragma("unroll")
#else
#define CNNC_UNROLL
#endif

/* Filters per vector, for the Cython side. */
static const ptrdiff_t cnnc_lanes_f = CNNC_LANES(cnnc_vf, float);
static const ptrdiff_t cnnc_lanes_d = CNNC_LANES(cnnc_vd, double);
static const ptrdiff_t cnnc_wide_most = CNNC_WIDE_MOST;
static const ptrdiff_t cnnc_narrow_most = CNNC_NARROW_MOST;

/* The activation fused into the store: z > 0 (or NaN) is kept; otherwise slope * z, and
 * exactly 0 for slope 0 (ReLU's max(z, 0), an infinite z included). slope 1 keeps z. */
#define CNNC_ACTIVATE(z, slope) \
    ((z) > 0 || (z) != (z) ? (z) : ((slope) == 0 ? 0 : (slope) * (z)))

/* The bodies of the vector operations below, by instruction set; P is the intrinsics'
 * suffix (ps or pd) and M512, M256 their vector types, for float or double. A partial load
 * is one masked load with AVX-512 (the lanes past n are never read), a copy elsewhere. */
#define CNNC_LOAD_PART_COPY(T, V) \
    V v;                          \
    memset(&v, 0, sizeof(V));     \
    memcpy(&v, src, (size_t)n * sizeof(T)); \
    return v;
#if defined(__AVX512F__)
#define CNNC_LOAD_PART_BODY(T, V, P, M512, M256) \
    return (V)_mm512_maskz_loadu_##P((__mmask16)((1u << n) - 1), src);
#define CNNC_STORE_PART_BODY(T, V, P, M512, M256) \
    _mm512_mask_storeu_##P(dst, (__mmask16)((1u << n) - 1), (M512)v);
#define CNNC_MADD_BODY(V, P, M512, M256) \
    return (V)_mm512_fmadd_##P(_mm512_set1_##P(s), (M512)b, (M512)acc);
#define CNNC_ACTIVATE_BODY(T, V, P, M512, M256)                                                  \
    M512 v = (M512)z;                                                                            \
    M512 other = slope == 0 ? _mm512_setzero_##P() : _mm512_mul_##P(v, _mm512_set1_##P(slope)); \
    return (V)_mm512_mask_blend_##P(_mm512_cmp_##P##_mask(v, _mm512_setzero_##P(), _CMP_NLE_UQ), \
                                    other, v);
#elif defined(__AVX2__) && defined(__FMA__)
#define CNNC_LOAD_PART_BODY(T, V, P, M512, M256) CNNC_LOAD_PART_COPY(T, V)
#define CNNC_STORE_PART_BODY(T, V, P, M512, M256) memcpy(dst, &v, (size_t)n * sizeof(T));
#define CNNC_MADD_BODY(V, P, M512, M256) \
    return (V)_mm256_fmadd_##P(_mm256_set1_##P(s), (M256)b, (M256)acc);
#define CNNC_ACTIVATE_BODY(T, V, P, M512, M256)                                                  \
    M256 v = (M256)z;                                                                            \
    M256 other = slope == 0 ? _mm256_setzero_##P() : _mm256_mul_##P(v, _mm256_set1_##P(slope)); \
    return (V)_mm256_blendv_##P(other, v, _mm256_cmp_##P(v, _mm256_setzero_##P(), _CMP_NLE_UQ));
#else
#define CNNC_LOAD_PART_BODY(T, V, P, M512, M256) CNNC_LOAD_PART_COPY(T, V)
#define CNNC_STORE_PART_BODY(T, V, P, M512, M256) memcpy(dst, &v, (size_t)n * sizeof(T));
#define CNNC_MADD_BODY(V, P, M512, M256) return acc + s * b;
#define CNNC_ACTIVATE_BODY(T, V, P, M512, M256)                                                  \
    T lanes[sizeof(V) / sizeof(T)];                                                              \
    size_t l;                                                                                    \
    memcpy(lanes, &z, sizeof(z));                                                                \
    for (l = 0; l < sizeof(V) / sizeof(T); l++) lanes[l] = CNNC_ACTIVATE(lanes[l], slope);       \
    memcpy(&z, lanes, sizeof(z));                                                                \
    return z;
#endif

/* For vectors V of T: cnnc_madd_S(acc, s, b) = acc + s * b for a scalar s, one fused
 * multiply-add of s broadcast where the build has FMA, a product and a sum elsewhere;
 * cnnc_activate_S(z, slope) = CNNC_ACTIVATE on every lane, a compare and a blend where
 * the build has the instructions, lane by lane elsewhere; and cnnc_load_part_S(src, n) =
 * src[0] to src[n - 1] in the first n lanes (0 < n < lanes), zero in the others, and
 * cnnc_store_part_S(dst, v, n) stores those lanes of v alone. */
#define CNNC_VECTOR_OPS(S, T, V, P, M512, M256)                                         \
static inline V cnnc_madd_##S(V acc, T s, V b) { CNNC_MADD_BODY(V, P, M512, M256) }     \
static inline V cnnc_activate_##S(V z, T slope) { CNNC_ACTIVATE_BODY(T, V, P, M512, M256) } \
static inline V cnnc_load_part_##S(const T* src, ptrdiff_t n)                           \
{ CNNC_LOAD_PART_BODY(T, V, P, M512, M256) }                                            \
static inline void cnnc_store_part_##S(T* dst, V v, ptrdiff_t n)                        \
{ CNNC_STORE_PART_BODY(T, V, P, M512, M256) }

CNNC_VECTOR_OPS(f, float, cnnc_vf, ps, __m512, __m256)
CNNC_VECTOR_OPS(d, double, cnnc_vd, pd, __m512d, __m256d)

/* y[k] = CNNC_ACTIVATE(y[k], slope) for k < count: a vector at a time, then the rest one
 * by one (an activation applied where a kernel's loops could not fuse it). */
#define CNNC_ACTIVATE_ROW(NAME, T, V, ACTIVATE)                                           \
static void NAME(T* y, ptrdiff_t count, T slope)                                          \
{                                                                                         \
    enum { W = (int)CNNC_LANES(V, T) };                                                   \
    V v;                                                                                  \
    ptrdiff_t k;                                                                          \
    for (k = 0; k + W <= count; k += W) {                                                 \
        memcpy(&v, y + k, sizeof(V));                                                     \
        v = ACTIVATE(v, slope);                                                           \
        memcpy(y + k, &v, sizeof(V));                                                     \
    }                                                                                     \
    for (; k < count; k++) y[k] = CNNC_ACTIVATE(y[k], slope);                             \
}
CNNC_ACTIVATE_ROW(cnnc_activate_row_float, float, cnnc_vf, cnnc_activate_f)
CNNC_ACTIVATE_ROW(cnnc_activate_row_double, double, cnnc_vd, cnnc_activate_d)

/* y[k * f + l] for k < PIXELS and l < stored: the activation of b[l] plus the sum over the
 * patch rows r < rows and the taps t < run of each row of
 * px[r * px_row + k * px_step + t] times w[r * w_row + t * w_stride + l]. */
#define CNNC_PIXEL_TILE(NAME, T, V, MADD, ACTIVATE, STORE_PART, VECTORS, PIXELS)          \
static void NAME(const T* px, ptrdiff_t px_row, ptrdiff_t px_step, ptrdiff_t rows,        \
                 ptrdiff_t run, const T* w, ptrdiff_t w_row, ptrdiff_t w_stride,          \
                 const T* b, T* y, ptrdiff_t f, ptrdiff_t stored, T slope)                \
{                                                                                         \
    enum { W = (int)CNNC_LANES(V, T) };                                                   \
    V acc[PIXELS][VECTORS], filters[VECTORS];                                             \
    ptrdiff_t r, t;                                                                       \
    int k, v;                                                                             \
    for (v = 0; v < VECTORS; v++) memcpy(&filters[v], b + v * W, sizeof(V));              \
    for (k = 0; k < PIXELS; k++)                                                          \
        for (v = 0; v < VECTORS; v++) acc[k][v] = filters[v];                             \
    for (r = 0; r < rows; r++) {                                                          \
        for (t = 0; t < run; t++) {                                                       \
            const T* tap = w + r * w_row + t * w_stride;                                  \
            const T* x = px + r * px_row + t;                                             \
            for (v = 0; v < VECTORS; v++) memcpy(&filters[v], tap + v * W, sizeof(V));    \
            CNNC_UNROLL for (k = 0; k < PIXELS; k++) {                                    \
                T value = x[k * px_step];                                                 \
                CNNC_UNROLL for (v = 0; v < VECTORS; v++)                                 \
                    acc[k][v] = MADD(acc[k][v], value, filters[v]);                       \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    if (slope != 1)                                                                       \
        CNNC_UNROLL for (k = 0; k < PIXELS; k++)                                          \
            CNNC_UNROLL for (v = 0; v < VECTORS; v++) acc[k][v] = ACTIVATE(acc[k][v], slope); \
    CNNC_UNROLL for (k = 0; k < PIXELS; k++)                                              \
        CNNC_UNROLL for (v = 0; v < VECTORS; v++) {                                       \
            if (stored >= (v + 1) * W)                                                    \
                memcpy(y + k * f + v * W, &acc[k][v], sizeof(V));                         \
            else if (stored > v * W)                                                      \
                STORE_PART(y + k * f + v * W, acc[k][v], stored - v * W);                 \
        }                                                                                 \
}

/* dw[t * dw_stride + l] += the sum over g < images, i < rows and j < columns of
 * x[g * x_image + i * x_row + j * x_step + tap[t]] * dy[g * dy_image + i * dy_row + j * dy_stride + l],
 * for t < TAPS and the filters l of one block: a few taps of the filter gradient over a
 * few images, each tap at its own offset in the patch (taps of several filter rows, for a
 * thin input). dy holds the first tail filters of the block's last vector (all of them:
 * tail = lanes), the others taken as zero and never read. With few taps, SPLIT sets of
 * sums take turns by column, so that enough multiply-adds are in flight to hide their
 * latency; the sets are added at the end. */
#define CNNC_FULL_GRAD(V, VECTORS, LOAD_PART, grad, row, tail) do {                      \
        int v_;                                                                           \
        for (v_ = 0; v_ < VECTORS; v_++) memcpy(&grad[v_], (row) + v_ * W, sizeof(V));    \
    } while (0)
#define CNNC_TAIL_GRAD(V, VECTORS, LOAD_PART, grad, row, tail) do {                      \
        int v_;                                                                           \
        for (v_ = 0; v_ < VECTORS - 1; v_++) memcpy(&grad[v_], (row) + v_ * W, sizeof(V)); \
        grad[VECTORS - 1] = LOAD_PART((row) + (VECTORS - 1) * W, tail);                   \
    } while (0)
/* CNNC_TAP_TILE's loops, each dy vector loaded by LOAD: CNNC_FULL_GRAD, or CNNC_TAIL_GRAD
 * where the block's last vector holds fewer than W filters (two functions, so that each
 * keeps its sums in registers). */
#define CNNC_TAP_SUMS(NAME, T, V, MADD, LOAD, LOAD_PART, VECTORS, TAPS)                   \
static void NAME(const T* x, const ptrdiff_t* tap, ptrdiff_t x_image, ptrdiff_t x_row,    \
                 ptrdiff_t x_step, const T* dy, ptrdiff_t dy_image, ptrdiff_t dy_row,     \
                 ptrdiff_t dy_stride, ptrdiff_t tail, ptrdiff_t images, ptrdiff_t rows,   \
                 ptrdiff_t columns, T* dw, ptrdiff_t dw_stride)                           \
{                                                                                         \
    enum { W = (int)CNNC_LANES(V, T),                                                     \
           SPLIT = TAPS * VECTORS >= 8 ? 1 : (TAPS * VECTORS >= 4 ? 2 : 4) };             \
    V acc[SPLIT][TAPS][VECTORS], grad[VECTORS], sum, zero = {0};                          \
    ptrdiff_t g, i, j;                                                                    \
    int part, t, v;                                                                       \
    CNNC_UNROLL for (part = 0; part < SPLIT; part++)                                      \
        CNNC_UNROLL for (t = 0; t < TAPS; t++)                                            \
            CNNC_UNROLL for (v = 0; v < VECTORS; v++) acc[part][t][v] = zero;             \
    for (g = 0; g < images; g++) {                                                        \
        for (i = 0; i < rows; i++) {                                                      \
            const T* xi = x + g * x_image + i * x_row;                                    \
            const T* dyi = dy + g * dy_image + i * dy_row;                                \
            for (j = 0; j + SPLIT <= columns; j += SPLIT) {                               \
                CNNC_UNROLL for (part = 0; part < SPLIT; part++) {                        \
                    const T* xj = xi + (j + part) * x_step;                               \
                    LOAD(V, VECTORS, LOAD_PART, grad, dyi + (j + part) * dy_stride, tail); \
                    CNNC_UNROLL for (t = 0; t < TAPS; t++) {                              \
                        T value = xj[tap[t]];                                             \
                        CNNC_UNROLL for (v = 0; v < VECTORS; v++)                         \
                            acc[part][t][v] = MADD(acc[part][t][v], value, grad[v]);      \
                    }                                                                     \
                }                                                                         \
            }                                                                             \
            for (; j < columns; j++) {                                                    \
                const T* xj = xi + j * x_step;                                            \
                LOAD(V, VECTORS, LOAD_PART, grad, dyi + j * dy_stride, tail);             \
                CNNC_UNROLL for (t = 0; t < TAPS; t++) {                                  \
                    T value = xj[tap[t]];                                                 \
                    CNNC_UNROLL for (v = 0; v < VECTORS; v++)                             \
                        acc[0][t][v] = MADD(acc[0][t][v], value, grad[v]);                \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    CNNC_UNROLL for (t = 0; t < TAPS; t++) {                                              \
        CNNC_UNROLL for (v = 0; v < VECTORS; v++) {                                       \
            memcpy(&sum, dw + t * dw_stride + v * W, sizeof(V));                          \
            CNNC_UNROLL for (part = 1; part < SPLIT; part++) acc[0][t][v] += acc[part][t][v]; \
            sum += acc[0][t][v];                                                          \
            memcpy(dw + t * dw_stride + v * W, &sum, sizeof(V));                          \
        }                                                                                 \
    }                                                                                     \
}
#define CNNC_TAP_TILE(NAME, T, V, MADD, LOAD_PART, VECTORS, TAPS)                         \
CNNC_TAP_SUMS(NAME##_full, T, V, MADD, CNNC_FULL_GRAD, LOAD_PART, VECTORS, TAPS)          \
CNNC_TAP_SUMS(NAME##_tail, T, V, MADD, CNNC_TAIL_GRAD, LOAD_PART, VECTORS, TAPS)          \
static void NAME(const T* x, const ptrdiff_t* tap, ptrdiff_t x_image, ptrdiff_t x_row,    \
                 ptrdiff_t x_step, const T* dy, ptrdiff_t dy_image, ptrdiff_t dy_row,     \
                 ptrdiff_t dy_stride, ptrdiff_t tail, ptrdiff_t images, ptrdiff_t rows,   \
                 ptrdiff_t columns, T* dw, ptrdiff_t dw_stride)                           \
{                                                                                         \
    (tail >= (ptrdiff_t)CNNC_LANES(V, T) ? NAME##_full : NAME##_tail)(                    \
        x, tap, x_image, x_row, x_step, dy, dy_image, dy_row, dy_stride, tail, images,    \
        rows, columns, dw, dw_stride);                                                    \
}

/* Every count from 1 to 16, for the tables of tiles. */
#define CNNC_COUNTS(M, A, B) M(A, B, 1) M(A, B, 2) M(A, B, 3) M(A, B, 4) M(A, B, 5)            \
    M(A, B, 6) M(A, B, 7) M(A, B, 8) M(A, B, 9) M(A, B, 10) M(A, B, 11) M(A, B, 12)          \
    M(A, B, 13) M(A, B, 14) M(A, B, 15) M(A, B, 16)

#define CNNC_PIXEL_TILE_F(VECTORS, UNUSED, N)                                              \
    CNNC_PIXEL_TILE(cnnc_pixels_f_##VECTORS##_##N, float, cnnc_vf, cnnc_madd_f, cnnc_activate_f, \
                    cnnc_store_part_f, VECTORS, N)
#define CNNC_PIXEL_TILE_D(VECTORS, UNUSED, N)                                              \
    CNNC_PIXEL_TILE(cnnc_pixels_d_##VECTORS##_##N, double, cnnc_vd, cnnc_madd_d, cnnc_activate_d, \
                    cnnc_store_part_d, VECTORS, N)
#define CNNC_TAP_TILE_F(VECTORS, UNUSED, N)                                                \
    CNNC_TAP_TILE(cnnc_taps_f_##VECTORS##_##N, float, cnnc_vf, cnnc_madd_f, cnnc_load_part_f, \
                  VECTORS, N)
#define CNNC_TAP_TILE_D(VECTORS, UNUSED, N)                                                \
    CNNC_TAP_TILE(cnnc_taps_d_##VECTORS##_##N, double, cnnc_vd, cnnc_madd_d, cnnc_load_part_d, \
                  VECTORS, N)
#define CNNC_ENTRY(PREFIX, VECTORS, N) PREFIX##_##VECTORS##_##N,

CNNC_COUNTS(CNNC_PIXEL_TILE_F, 1, ~) CNNC_COUNTS(CNNC_PIXEL_TILE_F, 2, ~)
CNNC_COUNTS(CNNC_PIXEL_TILE_D, 1, ~) CNNC_COUNTS(CNNC_PIXEL_TILE_D, 2, ~)
CNNC_COUNTS(CNNC_TAP_TILE_F, 1, ~) CNNC_COUNTS(CNNC_TAP_TILE_F, 2, ~)
CNNC_COUNTS(CNNC_TAP_TILE_D, 1, ~) CNNC_COUNTS(CNNC_TAP_TILE_D, 2, ~)

typedef void (*cnnc_pixel_tile_f)(const float*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                  const float*, ptrdiff_t, ptrdiff_t, const float*, float*,
                                  ptrdiff_t, ptrdiff_t, float);
typedef void (*cnnc_pixel_tile_d)(const double*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                  const double*, ptrdiff_t, ptrdiff_t, const double*, double*,
                                  ptrdiff_t, ptrdiff_t, double);
typedef void (*cnnc_tap_tile_f)(const float*, const ptrdiff_t*, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                const float*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                ptrdiff_t, ptrdiff_t, ptrdiff_t, float*, ptrdiff_t);
typedef void (*cnnc_tap_tile_d)(const double*, const ptrdiff_t*, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                const double*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                ptrdiff_t, ptrdiff_t, ptrdiff_t, double*, ptrdiff_t);

/* The tiles by [vectors - 1][count - 1]. */
static const cnnc_pixel_tile_f cnnc_pixel_tiles_f[2][16] = {
    {CNNC_COUNTS(CNNC_ENTRY, cnnc_pixels_f, 1)}, {CNNC_COUNTS(CNNC_ENTRY, cnnc_pixels_f, 2)}};
static const cnnc_pixel_tile_d cnnc_pixel_tiles_d[2][16] = {
    {CNNC_COUNTS(CNNC_ENTRY, cnnc_pixels_d, 1)}, {CNNC_COUNTS(CNNC_ENTRY, cnnc_pixels_d, 2)}};
static const cnnc_tap_tile_f cnnc_tap_tiles_f[2][16] = {
    {CNNC_COUNTS(CNNC_ENTRY, cnnc_taps_f, 1)}, {CNNC_COUNTS(CNNC_ENTRY, cnnc_taps_f, 2)}};
static const cnnc_tap_tile_d cnnc_tap_tiles_d[2][16] = {
    {CNNC_COUNTS(CNNC_ENTRY, cnnc_taps_d, 1)}, {CNNC_COUNTS(CNNC_ENTRY, cnnc_taps_d, 2)}};

static void cnnc_pixel_tile_float(int vectors, int pixels, const float* px, ptrdiff_t px_row,
                                  ptrdiff_t px_step, ptrdiff_t rows, ptrdiff_t run,
                                  const float* w, ptrdiff_t w_row, ptrdiff_t w_stride,
                                  const float* b, float* y, ptrdiff_t f, ptrdiff_t stored,
                                  float slope)
{
    cnnc_pixel_tiles_f[vectors - 1][pixels - 1](px, px_row, px_step, rows, run, w, w_row,
                                                w_stride, b, y, f, stored, slope);
}

static void cnnc_pixel_tile_double(int vectors, int pixels, const double* px, ptrdiff_t px_row,
                                   ptrdiff_t px_step, ptrdiff_t rows, ptrdiff_t run,
                                   const double* w, ptrdiff_t w_row, ptrdiff_t w_stride,
                                   const double* b, double* y, ptrdiff_t f, ptrdiff_t stored,
                                   double slope)
{
    cnnc_pixel_tiles_d[vectors - 1][pixels - 1](px, px_row, px_step, rows, run, w, w_row,
                                                w_stride, b, y, f, stored, slope);
}

static void cnnc_tap_tile_float(int vectors, int taps, const float* x, const ptrdiff_t* tap,
                                ptrdiff_t x_image, ptrdiff_t x_row, ptrdiff_t x_step,
                                const float* dy, ptrdiff_t dy_image, ptrdiff_t dy_row,
                                ptrdiff_t dy_stride, ptrdiff_t tail, ptrdiff_t images,
                                ptrdiff_t rows, ptrdiff_t columns, float* dw, ptrdiff_t dw_stride)
{
    cnnc_tap_tiles_f[vectors - 1][taps - 1](x, tap, x_image, x_row, x_step, dy, dy_image, dy_row,
                                            dy_stride, tail, images, rows, columns, dw, dw_stride);
}

static void cnnc_tap_tile_double(int vectors, int taps, const double* x, const ptrdiff_t* tap,
                                 ptrdiff_t x_image, ptrdiff_t x_row, ptrdiff_t x_step,
                                 const double* dy, ptrdiff_t dy_image, ptrdiff_t dy_row,
                                 ptrdiff_t dy_stride, ptrdiff_t tail, ptrdiff_t images,
                                 ptrdiff_t rows, ptrdiff_t columns, double* dw,
                                 ptrdiff_t dw_stride)
{
    cnnc_tap_tiles_d[vectors - 1][taps - 1](x, tap, x_image, x_row, x_step, dy, dy_image, dy_row,
                                            dy_stride, tail, images, rows, columns, dw, dw_stride);
}

/* sums[l] += the sum over r < count of rows[r * stride + l], for l < width: the bias
 * gradient of a group of pixels, vector by vector down the rows, then value by value for
 * the last few. */
#define CNNC_COLUMN_SUMS(NAME, T, V)                                                      \
static void NAME(const T* rows, ptrdiff_t count, ptrdiff_t stride, ptrdiff_t width, T* sums) \
{                                                                                         \
    enum { W = (int)CNNC_LANES(V, T) };                                                   \
    V acc, value;                                                                         \
    T one;                                                                                \
    ptrdiff_t l, r;                                                                       \
    for (l = 0; l + W <= width; l += W) {                                                 \
        memcpy(&acc, sums + l, sizeof(V));                                                \
        for (r = 0; r < count; r++) {                                                     \
            memcpy(&value, rows + r * stride + l, sizeof(V));                             \
            acc += value;                                                                 \
        }                                                                                 \
        memcpy(sums + l, &acc, sizeof(V));                                                \
    }                                                                                     \
    for (; l < width; l++) {                                                              \
        one = sums[l];                                                                    \
        for (r = 0; r < count; r++) one += rows[r * stride + l];                          \
        sums[l] = one;                                                                    \
    }                                                                                     \
}
CNNC_COLUMN_SUMS(cnnc_column_sums_float, float, cnnc_vf)
CNNC_COLUMN_SUMS(cnnc_column_sums_double, double, cnnc_vd)

#endif
