/* The innermost loops of cnnc's direct convolution (_direct_convolution.pxi),
 * written with explicit vectors: a block of LANES filters is a few machine vectors, and a
 * tile of several output pixels keeps that many independent sums in flight. Compilers
 * without GCC's vector extensions get vectors of one element: the same loops, scalar.
 * Products and sums stay separate operations (no fused multiply-add), so that every build
 * computes the same bits.
 *
 * Filters are stored (patch, w_stride), patch = kh * kw * C in (row, column, channel)
 * order; images and gradients are NHWC. Every pointer is already offset to its block. */
#ifndef CNNC_DIRECT_CONV_H
#define CNNC_DIRECT_CONV_H

#include <stddef.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
typedef float cnnc_vf __attribute__((vector_size(32)));
typedef double cnnc_vd __attribute__((vector_size(32)));
#else
typedef float cnnc_vf;
typedef double cnnc_vd;
#endif
#define CNNC_WIDTH(V, T) ((int)(sizeof(V) / sizeof(T)))

/* y[k * f + l] for k < pixels (at most PIXELS) and l < stored: b[l] plus the sum over
 * the patch rows r < rows and the taps t < run of each row of
 * px[r * px_row + k * px_step + t] times w[r * w_row + t * w_stride + l], the filters of
 * one lane block. All PIXELS patches are read: the caller's rows are wide enough. */
#define CNNC_PIXEL_TILE(NAME, T, V, LANES, PIXELS)                                        \
static void NAME(const T* px, ptrdiff_t px_row, ptrdiff_t px_step, ptrdiff_t rows,        \
                 ptrdiff_t run, const T* w, ptrdiff_t w_row, ptrdiff_t w_stride,          \
                 const T* b, T* y, ptrdiff_t f, ptrdiff_t stored, ptrdiff_t pixels)       \
{                                                                                         \
    enum { W = CNNC_WIDTH(V, T), VECTORS = LANES / CNNC_WIDTH(V, T) };                    \
    V acc[PIXELS][VECTORS], filters[VECTORS];                                             \
    T out[LANES];                                                                         \
    ptrdiff_t r, t, l;                                                                    \
    int k, v;                                                                             \
    for (v = 0; v < VECTORS; v++) memcpy(&filters[v], b + v * W, sizeof(V));              \
    for (k = 0; k < PIXELS; k++)                                                          \
        for (v = 0; v < VECTORS; v++) acc[k][v] = filters[v];                             \
    for (r = 0; r < rows; r++) {                                                          \
        for (t = 0; t < run; t++) {                                                       \
            const T* tap = w + r * w_row + t * w_stride;                                  \
            const T* x = px + r * px_row + t;                                             \
            for (v = 0; v < VECTORS; v++) memcpy(&filters[v], tap + v * W, sizeof(V));    \
            for (k = 0; k < PIXELS; k++) {                                                \
                T value = x[k * px_step];                                                 \
                for (v = 0; v < VECTORS; v++) acc[k][v] += value * filters[v];            \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    for (k = 0; k < PIXELS && k < pixels; k++) {                                          \
        for (v = 0; v < VECTORS; v++) memcpy(out + v * W, &acc[k][v], sizeof(V));         \
        for (l = 0; l < LANES; l++)     /* not a memcpy call for a few floats */          \
            if (l < stored) y[k * f + l] = out[l];                                        \
    }                                                                                     \
}

/* dw[l] += the sum over i < rows and j < columns of
 * x[i * x_row + j * x_step] * dy[i * dy_row + j * dy_stride + l], l < LANES: one tap of the
 * filter gradient over one image, in four interleaved sums. */
#define CNNC_TAP_SUM(NAME, T, V, LANES)                                                   \
static void NAME(const T* x, ptrdiff_t x_row, ptrdiff_t x_step, const T* dy,              \
                 ptrdiff_t dy_row, ptrdiff_t dy_stride, ptrdiff_t rows, ptrdiff_t columns, \
                 T* dw)                                                                   \
{                                                                                         \
    enum { W = CNNC_WIDTH(V, T), VECTORS = LANES / CNNC_WIDTH(V, T) };                    \
    V sums[4][VECTORS], grad;                                                             \
    ptrdiff_t i, j;                                                                       \
    int k, v;                                                                             \
    memset(sums, 0, sizeof(sums));                                                        \
    for (i = 0; i < rows; i++) {                                                          \
        const T* xi = x + i * x_row;                                                      \
        const T* dyi = dy + i * dy_row;                                                   \
        for (j = 0; j + 4 <= columns; j += 4) {                                           \
            for (k = 0; k < 4; k++) {                                                     \
                T value = xi[(j + k) * x_step];                                           \
                for (v = 0; v < VECTORS; v++) {                                           \
                    memcpy(&grad, dyi + (j + k) * dy_stride + v * W, sizeof(V));          \
                    sums[k][v] += value * grad;                                           \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
        for (; j < columns; j++) {                                                        \
            for (v = 0; v < VECTORS; v++) {                                               \
                memcpy(&grad, dyi + j * dy_stride + v * W, sizeof(V));                    \
                sums[0][v] += xi[j * x_step] * grad;                                      \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    for (v = 0; v < VECTORS; v++) {                                                       \
        memcpy(&grad, dw + v * W, sizeof(V));                                             \
        grad += (sums[0][v] + sums[2][v]) + (sums[1][v] + sums[3][v]);                    \
        memcpy(dw + v * W, &grad, sizeof(V));                                             \
    }                                                                                     \
}

/* Tiles: 8 filters by 8 pixels, 16 filters by 4 pixels (eight vectors of sums in
 * flight either way, in single precision with AVX). */
CNNC_PIXEL_TILE(cnnc_pixels_8x8_f, float, cnnc_vf, 8, 8)
CNNC_PIXEL_TILE(cnnc_pixels_16x4_f, float, cnnc_vf, 16, 4)
CNNC_PIXEL_TILE(cnnc_pixels_8x8_d, double, cnnc_vd, 8, 8)
CNNC_PIXEL_TILE(cnnc_pixels_16x4_d, double, cnnc_vd, 16, 4)
CNNC_TAP_SUM(cnnc_tap_sum_8_f, float, cnnc_vf, 8)
CNNC_TAP_SUM(cnnc_tap_sum_16_f, float, cnnc_vf, 16)
CNNC_TAP_SUM(cnnc_tap_sum_8_d, double, cnnc_vd, 8)
CNNC_TAP_SUM(cnnc_tap_sum_16_d, double, cnnc_vd, 16)

#endif
