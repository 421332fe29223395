/* The innermost loops of cnnc's max pooling (_pooling.pxi): one window position over a
 * whole output row, in inference (the maxima) and in training (the maxima and where they
 * were). A pixel's channels are few in early layers (1, 3, 6), too few for a loop over
 * them to run fast; a switch gives each count up to 8 a loop the compiler unrolls, and
 * larger counts a loop it vectorizes. */
#ifndef CNNC_POOL_ROWS_H
#define CNNC_POOL_ROWS_H

#include <stddef.h>
#include <stdint.h>

/* out[j * channels + c] = src[j * step + c] where that is larger or NaN, for j < count and
 * c < channels: a NaN wins, and a tie keeps out (the earlier window position). */
#define CNNC_MAX_INTO(OUT, SRC, COUNT, STEP, CHANNELS) do {                                  \
        ptrdiff_t j_, c_;                                                                    \
        for (j_ = 0; j_ < (COUNT); j_++)                                                     \
            for (c_ = 0; c_ < (CHANNELS); c_++) {                                            \
                value = (SRC)[j_ * (STEP) + c_];                                             \
                current = (OUT)[j_ * (CHANNELS) + c_];                                       \
                (OUT)[j_ * (CHANNELS) + c_] = (value > current) | (value != value) ? value : current; \
            }                                                                                \
    } while (0)

/* LOOP(channels) with the channel count a constant for each count up to 8, so that the
 * compiler unrolls it, and the count as it is for more. */
#define CNNC_BY_CHANNELS(LOOP) do {                                                          \
        switch (channels) {                                                                  \
            case 1: LOOP(1); break;                                                          \
            case 2: LOOP(2); break;                                                          \
            case 3: LOOP(3); break;                                                          \
            case 4: LOOP(4); break;                                                          \
            case 5: LOOP(5); break;                                                          \
            case 6: LOOP(6); break;                                                          \
            case 7: LOOP(7); break;                                                          \
            case 8: LOOP(8); break;                                                          \
            default: LOOP(channels);                                                         \
        }                                                                                    \
    } while (0)

#define CNNC_MAX_LOOP(CC) CNNC_MAX_INTO(out, src, count, step, CC)

#define CNNC_MAX_ROW(NAME, T)                                                                \
static void NAME(T* out, const T* src, ptrdiff_t count, ptrdiff_t step, ptrdiff_t channels)  \
{                                                                                            \
    T value, current;                                                                        \
    CNNC_BY_CHANNELS(CNNC_MAX_LOOP);                                                         \
}

CNNC_MAX_ROW(cnnc_max_row_float, float)
CNNC_MAX_ROW(cnnc_max_row_double, double)

/* As CNNC_MAX_INTO, and where[j * channels + c] = position + j * position_step wherever
 * src won; here a NaN wins over a number only, so that the first NaN stays where it was
 * (maxpool2d_forward's rule: the first maximum in window order). */
#define CNNC_MAX_WHERE_INTO(OUT, WHERE, SRC, COUNT, STEP, CHANNELS) do {                     \
        ptrdiff_t j_, c_;                                                                    \
        for (j_ = 0; j_ < (COUNT); j_++)                                                     \
            for (c_ = 0; c_ < (CHANNELS); c_++) {                                            \
                int take_;                                                                   \
                value = (SRC)[j_ * (STEP) + c_];                                             \
                current = (OUT)[j_ * (CHANNELS) + c_];                                       \
                take_ = (value > current) | ((value != value) & (current == current));       \
                (OUT)[j_ * (CHANNELS) + c_] = take_ ? value : current;                       \
                (WHERE)[j_ * (CHANNELS) + c_] = take_ ? (int32_t)(position + j_ * position_step) \
                                                      : (WHERE)[j_ * (CHANNELS) + c_];       \
            }                                                                                \
    } while (0)

#define CNNC_MAX_WHERE_LOOP(CC) CNNC_MAX_WHERE_INTO(out, where, src, count, step, CC)

#define CNNC_MAX_WHERE_ROW(NAME, T)                                                          \
static void NAME(T* out, int32_t* where, const T* src, ptrdiff_t count, ptrdiff_t step,      \
                 ptrdiff_t channels, ptrdiff_t position, ptrdiff_t position_step)            \
{                                                                                            \
    T value, current;                                                                        \
    CNNC_BY_CHANNELS(CNNC_MAX_WHERE_LOOP);                                                   \
}

CNNC_MAX_WHERE_ROW(cnnc_max_where_row_float, float)
CNNC_MAX_WHERE_ROW(cnnc_max_where_row_double, double)

#endif
