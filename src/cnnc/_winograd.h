/* The transforms of cnnc's Winograd convolutions F(2x2, 3x3) and F(4x4, 3x3) (_winograd.pxi;
 * Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): an m x m
 * tile of a 3x3 convolution's output is A^T [(G g G^T) . (B^T d B)] A for the
 * (m + 2) x (m + 2) input tile d under it. The products of the positions of the tile run on
 * the direct convolution's register tiles (_direct_conv.h); these loops turn input tiles
 * into their positions and the positions' sums back into output tiles. They run along a
 * pixel's channels, contiguous in NHWC, a vector of them at a time (_direct_conv.h's),
 * then one at a time for the rest.
 *
 * F(2x2, 3x3): 16 multiplications per channel where the direct sum takes 36.
 *
 *        [1  0 -1  0]          [1  1  1  0]
 *  B^T = [0  1  1  0]    A^T = [0  1 -1 -1]
 *        [0 -1  1  0]
 *        [0  1  0 -1]                                                                  */
#ifndef CNNC_WINOGRAD_H
#define CNNC_WINOGRAD_H

#include <stddef.h>
#include <string.h>

#include "_direct_conv.h"

/* best = value where value > best or value is NaN (maxpool2d_inference's rule, the later
 * window position winning only so), lane by lane; M is the lanes' mask type. */
#if defined(__GNUC__) || defined(__clang__)
typedef int cnnc_mask_f __attribute__((vector_size(CNNC_VECTOR_BYTES)));
typedef long long cnnc_mask_d __attribute__((vector_size(CNNC_VECTOR_BYTES)));
#define CNNC_LATER_WINS(M, best, value) do {                                                \
        M take_ = (M)((value) > (best)) | (M)((value) != (value));                          \
        (best) = (__typeof__(best))(((M)(value) & take_) | ((M)(best) & ~take_));           \
    } while (0)
#else
typedef int cnnc_mask_f;
typedef int cnnc_mask_d;
#define CNNC_LATER_WINS(M, best, value) \
    ((best) = (value) > (best) || (value) != (value) ? (value) : (best))
#endif
#define CNNC_SCALAR_LATER_WINS(M, best, value) \
    ((best) = (value) > (best) || (value) != (value) ? (value) : (best))
#define CNNC_SCALAR_ACTIVATE(z, slope) CNNC_ACTIVATE(z, slope)

/* d[i][j] = slab[i * slab_row + (TILE t + j) * channels + c] for i, j < SIDE (a vector of
 * channels from c on, or one value), each added to total: an input tile of tile t. */
#define CNNC_WINOGRAD_LOAD(V, d, SIDE, TILE, slab, slab_row, t, channels, c, total) do {     \
        int a_, b_;                                                                         \
        for (a_ = 0; a_ < (SIDE); a_++)                                                     \
            for (b_ = 0; b_ < (SIDE); b_++) {                                               \
                memcpy(&d[a_][b_], (slab) + a_ * (slab_row) + ((TILE) * (t) + b_) * (channels) + (c), \
                       sizeof(V));                                                          \
                (total) += d[a_][b_];                                                       \
            }                                                                               \
    } while (0)

/* v[p * plane + t * channels + c] for the 16 positions p = 4 i + j of B^T d B, where
 * d[i][j] = slab[i * slab_row + (2 t + j) * channels + c], for channels c to c + sizeof(V)
 * / sizeof(T) (one vector, or one value); every d is added to total. */
#define CNNC_WINOGRAD_IN_STEP(V, slab, slab_row, t, channels, c, v, plane, total) do {       \
        V d_[4][4], r_[4][4];                                                               \
        int i_, j_;                                                                         \
        CNNC_WINOGRAD_LOAD(V, d_, 4, 2, slab, slab_row, t, channels, c, total);             \
        for (j_ = 0; j_ < 4; j_++) {                                                        \
            r_[0][j_] = d_[0][j_] - d_[2][j_];                                              \
            r_[1][j_] = d_[1][j_] + d_[2][j_];                                              \
            r_[2][j_] = d_[2][j_] - d_[1][j_];                                              \
            r_[3][j_] = d_[1][j_] - d_[3][j_];                                              \
        }                                                                                   \
        for (i_ = 0; i_ < 4; i_++) {                                                        \
            V o_[4];                                                                        \
            o_[0] = r_[i_][0] - r_[i_][2];                                                  \
            o_[1] = r_[i_][1] + r_[i_][2];                                                  \
            o_[2] = r_[i_][2] - r_[i_][1];                                                  \
            o_[3] = r_[i_][1] - r_[i_][3];                                                  \
            for (j_ = 0; j_ < 4; j_++)                                                      \
                memcpy((v) + (4 * i_ + j_) * (plane) + (t) * (channels) + (c), &o_[j_], sizeof(V)); \
        }                                                                                   \
    } while (0)

/* The input tiles t < tiles of a row of tiles, from the rows of input (zero-padded) under
 * it, turned into their positions: STEP (CNNC_WINOGRAD_IN_STEP, or CNNC_WINOGRAD4_IN_STEP)
 * for every channel. Returns whether every input was finite (their sum is; a sum that
 * overflows says no too): an infinity or NaN would spread through the transforms to
 * outputs that do not see it. */
#define CNNC_WINOGRAD_INPUT(NAME, T, V, STEP)                                               \
static int NAME(const T* slab, ptrdiff_t slab_row, ptrdiff_t tiles, ptrdiff_t channels,     \
                T* v, ptrdiff_t plane)                                                      \
{                                                                                           \
    enum { W = (int)CNNC_LANES(V, T) };                                                     \
    V total = {0};                                                                          \
    T lanes[W], rest = 0;                                                                   \
    ptrdiff_t t, c;                                                                         \
    int l;                                                                                  \
    for (t = 0; t < tiles; t++) {                                                           \
        for (c = 0; c + W <= channels; c += W)                                              \
            STEP(V, slab, slab_row, t, channels, c, v, plane, total);                       \
        for (; c < channels; c++)                                                           \
            STEP(T, slab, slab_row, t, channels, c, v, plane, rest);                        \
    }                                                                                       \
    memcpy(lanes, &total, sizeof(V));                                                       \
    for (l = 0; l < W; l++) rest += lanes[l];                                               \
    return rest - rest == 0;                                                                \
}

/* For the filters l to l + sizeof(V) / sizeof(T) of tile t: the 2x2 output tile
 * A^T m A + b, activated, where m[i][j] = sums[(4 i + j) * plane + t * width + l]; stored
 * to out[a * y_row + q * y_pixel + l] for the rows a < rows and columns q < columns (1 or
 * 2) the output has, or, pooled, the maximum of the four (in maxpool2d_inference's order)
 * to out[l]. */
#define CNNC_WINOGRAD_OUT_STEP(V, M, ACTIVATE, LATER_WINS, sums, plane, width, t, l, b, slope, \
                               out, y_row, y_pixel, rows, columns, pooled) do {             \
        V s_[2][4], z_[2][2], bias_;                                                        \
        int i_, j_;                                                                         \
        memcpy(&bias_, (b) + (l), sizeof(V));                                               \
        for (j_ = 0; j_ < 4; j_++) {                                                        \
            V m_[4];                                                                        \
            for (i_ = 0; i_ < 4; i_++)                                                      \
                memcpy(&m_[i_], (sums) + (4 * i_ + j_) * (plane) + (t) * (width) + (l), sizeof(V)); \
            s_[0][j_] = m_[0] + m_[1] + m_[2];                                              \
            s_[1][j_] = m_[1] - m_[2] - m_[3];                                              \
        }                                                                                   \
        for (i_ = 0; i_ < 2; i_++) {                                                        \
            z_[i_][0] = ACTIVATE(s_[i_][0] + s_[i_][1] + s_[i_][2] + bias_, slope);        \
            z_[i_][1] = ACTIVATE(s_[i_][1] - s_[i_][2] - s_[i_][3] + bias_, slope);        \
        }                                                                                   \
        if (pooled) {                                                                       \
            V best_ = z_[0][0];                                                             \
            LATER_WINS(M, best_, z_[0][1]);                                                 \
            LATER_WINS(M, best_, z_[1][0]);                                                 \
            LATER_WINS(M, best_, z_[1][1]);                                                 \
            memcpy((out) + (l), &best_, sizeof(V));                                         \
        } else {                                                                            \
            for (i_ = 0; i_ < (rows); i_++)                                                 \
                for (j_ = 0; j_ < (columns); j_++)                                          \
                    memcpy((out) + i_ * (y_row) + j_ * (y_pixel) + (l), &z_[i_][j_], sizeof(V)); \
        }                                                                                   \
    } while (0)

/* The output tiles t < tiles of a row of TILE x TILE tiles from their positions' sums
 * (rows of width values, b and the sums padded to it), by STEP (CNNC_WINOGRAD_OUT_STEP or
 * CNNC_WINOGRAD4_OUT_STEP): the rows a < rows of the output and its columns
 * TILE t + q < columns, written to y[a * y_row + (TILE t + q) * y_pixel + l] for l < f;
 * or, pooled, the 2x2 maxima of each tile, its pooled rows a < rows and pooled columns
 * (TILE / 2) t + q < columns / 2. */
#define CNNC_WINOGRAD_OUTPUT(NAME, T, V, M, S, STEP, TILE)                                  \
static void NAME(const T* sums, ptrdiff_t plane, ptrdiff_t width, ptrdiff_t tiles,          \
                 const T* b, T slope, T* y, ptrdiff_t y_row, ptrdiff_t y_pixel, ptrdiff_t f, \
                 ptrdiff_t rows, ptrdiff_t columns, int pooled)                             \
{                                                                                           \
    enum { W = (int)CNNC_LANES(V, T) };                                                     \
    ptrdiff_t t, l;                                                                         \
    for (t = 0; t < tiles; t++) {                                                           \
        ptrdiff_t side = pooled ? (TILE) / 2 : (TILE);                                      \
        ptrdiff_t left = (pooled ? columns / 2 : columns) - side * t;                       \
        ptrdiff_t across = left < side ? left : side;                                       \
        T* out = y + side * t * y_pixel;                                                    \
        for (l = 0; l + W <= f; l += W)                                                     \
            STEP(V, M, cnnc_activate_##S, CNNC_LATER_WINS, sums, plane, width, t, l, b, slope, \
                 out, y_row, y_pixel, rows, across, pooled);                                \
        for (; l < f; l++)                                                                  \
            STEP(T, M, CNNC_SCALAR_ACTIVATE, CNNC_SCALAR_LATER_WINS, sums, plane, width, t, l, \
                 b, slope, out, y_row, y_pixel, rows, across, pooled);                      \
    }                                                                                       \
}

/* F(4x4, 3x3): a 4x4 output tile from its 6x6 input tile, 36 multiplications per channel
 * where the direct sum takes 144 (Lavin and Gray's interpolation points 0, 1, -1, 2, -2):
 *
 *        [4  0 -5  0  1  0]          [1  1  1  1  1  0]          [ 1/4     0     0]
 *        [0 -4 -4  1  1  0]    A^T = [0  1 -1  2 -2  0]      G = [-1/6  -1/6  -1/6]
 *  B^T = [0  4 -4 -1  1  0]          [0  1  1  4  4  0]          [-1/6   1/6  -1/6]
 *        [0 -2 -1  2  1  0]          [0  1 -1  8 -8  1]          [1/24  1/12   1/6]
 *        [0  2 -1 -2  1  0]                                      [1/24 -1/12   1/6]
 *        [0  4  0 -5  0  1]                                      [   0     0     1]
 *
 * o = B^T d and y = A^T m for six values d, m (vectors or values), each as few operations
 * as the matrices allow. */
#define CNNC_WINOGRAD4_B(o, d) do {                                                         \
        o[0] = 4 * d[0] - 5 * d[2] + d[4];                                                  \
        o[1] = (d[3] + d[4]) - 4 * (d[1] + d[2]);                                           \
        o[2] = (d[4] - d[3]) + 4 * (d[1] - d[2]);                                           \
        o[3] = (d[4] - d[2]) + 2 * (d[3] - d[1]);                                           \
        o[4] = (d[4] - d[2]) - 2 * (d[3] - d[1]);                                           \
        o[5] = 4 * d[1] - 5 * d[3] + d[5];                                                  \
    } while (0)
#define CNNC_WINOGRAD4_A(y, m) do {                                                         \
        y[0] = m[0] + m[1] + m[2] + m[3] + m[4];                                            \
        y[1] = (m[1] - m[2]) + 2 * (m[3] - m[4]);                                           \
        y[2] = (m[1] + m[2]) + 4 * (m[3] + m[4]);                                           \
        y[3] = (m[1] - m[2]) + 8 * (m[3] - m[4]) + m[5];                                    \
    } while (0)

/* As CNNC_WINOGRAD_IN_STEP, for F(4x4, 3x3): the 36 positions p = 6 i + j of B^T d B,
 * d[i][j] = slab[i * slab_row + (4 t + j) * channels + c]. */
#define CNNC_WINOGRAD4_IN_STEP(V, slab, slab_row, t, channels, c, v, plane, total) do {      \
        V d_[6][6], column_[6], r_[6][6], o_[6];                                            \
        int i_, j_;                                                                         \
        CNNC_WINOGRAD_LOAD(V, d_, 6, 4, slab, slab_row, t, channels, c, total);             \
        for (j_ = 0; j_ < 6; j_++) {                                                        \
            for (i_ = 0; i_ < 6; i_++) column_[i_] = d_[i_][j_];                            \
            CNNC_WINOGRAD4_B(o_, column_);                                                  \
            for (i_ = 0; i_ < 6; i_++) r_[i_][j_] = o_[i_];                                 \
        }                                                                                   \
        for (i_ = 0; i_ < 6; i_++) {                                                        \
            CNNC_WINOGRAD4_B(o_, r_[i_]);                                                   \
            for (j_ = 0; j_ < 6; j_++)                                                      \
                memcpy((v) + (6 * i_ + j_) * (plane) + (t) * (channels) + (c), &o_[j_], sizeof(V)); \
        }                                                                                   \
    } while (0)

/* As CNNC_WINOGRAD_OUT_STEP, for F(4x4, 3x3): the 4x4 output tile, its rows a < rows and
 * columns q < columns stored; or, pooled, the 2x2 windows of the tile, the pooled rows
 * a < rows and columns q < columns stored to out[a * y_row + q * y_pixel + l]. */
#define CNNC_WINOGRAD4_OUT_STEP(V, M, ACTIVATE, LATER_WINS, sums, plane, width, t, l, b, slope, \
                                out, y_row, y_pixel, rows, columns, pooled) do {            \
        V m_[6], column_[4], s_[4][6], z_[4][4], bias_;                                     \
        int i_, j_;                                                                         \
        memcpy(&bias_, (b) + (l), sizeof(V));                                               \
        for (j_ = 0; j_ < 6; j_++) {                                                        \
            for (i_ = 0; i_ < 6; i_++)                                                      \
                memcpy(&m_[i_], (sums) + (6 * i_ + j_) * (plane) + (t) * (width) + (l), sizeof(V)); \
            CNNC_WINOGRAD4_A(column_, m_);                                                  \
            for (i_ = 0; i_ < 4; i_++) s_[i_][j_] = column_[i_];                            \
        }                                                                                   \
        for (i_ = 0; i_ < 4; i_++) {                                                        \
            CNNC_WINOGRAD4_A(z_[i_], s_[i_]);                                               \
            for (j_ = 0; j_ < 4; j_++) z_[i_][j_] = ACTIVATE(z_[i_][j_] + bias_, slope);   \
        }                                                                                   \
        for (i_ = 0; i_ < (rows); i_++)                                                     \
            for (j_ = 0; j_ < (columns); j_++) {                                            \
                V best_ = z_[i_][j_];                                                       \
                if (pooled) {                                                               \
                    best_ = z_[2 * i_][2 * j_];                                             \
                    LATER_WINS(M, best_, z_[2 * i_][2 * j_ + 1]);                           \
                    LATER_WINS(M, best_, z_[2 * i_ + 1][2 * j_]);                           \
                    LATER_WINS(M, best_, z_[2 * i_ + 1][2 * j_ + 1]);                       \
                }                                                                           \
                memcpy((out) + i_ * (y_row) + j_ * (y_pixel) + (l), &best_, sizeof(V));     \
            }                                                                               \
    } while (0)

/* e[a][b] = dy[a * dy_row + b * dy_pixel + l] for the rows a < rows and columns b < columns
 * of a SIDE x SIDE tile of dy (a vector of filters, or one value), zero beyond; each value
 * loaded is added to sum. */
#define CNNC_WINOGRAD_GRAD_LOAD(V, e, SIDE, dy, dy_row, dy_pixel, rows, columns, l, zero, sum) \
    do {                                                                                    \
        int a_, b_;                                                                         \
        for (a_ = 0; a_ < (SIDE); a_++)                                                     \
            for (b_ = 0; b_ < (SIDE); b_++) {                                               \
                e[a_][b_] = (zero);                                                         \
                if (a_ < (rows) && b_ < (columns)) {                                        \
                    memcpy(&e[a_][b_], (dy) + a_ * (dy_row) + b_ * (dy_pixel) + (l), sizeof(V)); \
                    (sum) += e[a_][b_];                                                     \
                }                                                                           \
            }                                                                               \
    } while (0)

/* The output gradient's side of the filter gradient (Lavin and Gray, section 4.1, turned
 * round): with y = A^T m A, the gradient of m is A dY A^T for the m x m tile dY of dy, and
 * the gradient of a position's transformed filter the sum over tiles of that times the
 * position's B^T d B; G^T (that sum) G is the 3x3 filter's gradient.
 *
 * g[p * plane + t * width + l] for the 16 positions p = 4 i + j of A dY A^T, where dY is
 * the 2x2 tile of dy[a * dy_row + q * dy_pixel + l] for rows a < rows and columns
 * q < columns (zero beyond): a vector of filters from l on, or one value; every value of
 * dY is added to sum. A^T is CNNC_WINOGRAD_OUT_STEP's; A (4 x 2) has the rows
 * (1 0), (1 1), (1 -1), (0 -1). */
#define CNNC_WINOGRAD_GRAD_STEP(V, dy, dy_row, dy_pixel, rows, columns, t, l, g, plane, width, \
                                sum) do {                                                   \
        V e_[2][2], r_[4][2], zero_;                                                        \
        int i_, j_;                                                                         \
        memset(&zero_, 0, sizeof(V));                                                       \
        CNNC_WINOGRAD_GRAD_LOAD(V, e_, 2, dy, dy_row, dy_pixel, rows, columns, l, zero_, sum); \
        for (j_ = 0; j_ < 2; j_++) {                                                        \
            r_[0][j_] = e_[0][j_];                                                          \
            r_[1][j_] = e_[0][j_] + e_[1][j_];                                              \
            r_[2][j_] = e_[0][j_] - e_[1][j_];                                              \
            r_[3][j_] = zero_ - e_[1][j_];                                                  \
        }                                                                                   \
        for (i_ = 0; i_ < 4; i_++) {                                                        \
            V o_[4];                                                                        \
            o_[0] = r_[i_][0];                                                              \
            o_[1] = r_[i_][0] + r_[i_][1];                                                  \
            o_[2] = r_[i_][0] - r_[i_][1];                                                  \
            o_[3] = zero_ - r_[i_][1];                                                      \
            for (j_ = 0; j_ < 4; j_++)                                                      \
                memcpy((g) + (4 * i_ + j_) * (plane) + (t) * (width) + (l), &o_[j_], sizeof(V)); \
        }                                                                                   \
    } while (0)

/* The output-gradient tiles t < tiles of a row of TILE x TILE tiles, each turned into its
 * positions by STEP (CNNC_WINOGRAD_GRAD_STEP or CNNC_WINOGRAD4_GRAD_STEP) from the rows
 * a < rows of dy and its columns TILE t + q < columns, for the filters l < f: written to
 * g[p * plane + t * width + l], and each tile's values added to db[l]. Returns whether
 * every value was finite, as CNNC_WINOGRAD_INPUT does. */
#define CNNC_WINOGRAD_GRADIENT(NAME, T, V, STEP, TILE)                                      \
static int NAME(const T* dy, ptrdiff_t dy_row, ptrdiff_t dy_pixel, ptrdiff_t rows,          \
                ptrdiff_t columns, ptrdiff_t tiles, ptrdiff_t f, T* g, ptrdiff_t plane,     \
                ptrdiff_t width, T* db)                                                     \
{                                                                                           \
    enum { W = (int)CNNC_LANES(V, T) };                                                     \
    V total = {0}, sum, bias;                                                               \
    T lanes[W], rest = 0, one;                                                              \
    ptrdiff_t t, l, across;                                                                 \
    int k;                                                                                  \
    for (t = 0; t < tiles; t++) {                                                           \
        const T* tile = dy + (TILE) * t * dy_pixel;                                         \
        across = columns - (TILE) * t < (TILE) ? columns - (TILE) * t : (TILE);             \
        for (l = 0; l + W <= f; l += W) {                                                   \
            memset(&sum, 0, sizeof(V));                                                     \
            STEP(V, tile, dy_row, dy_pixel, rows, across, t, l, g, plane, width, sum);      \
            memcpy(&bias, db + l, sizeof(V));                                               \
            bias += sum;                                                                    \
            memcpy(db + l, &bias, sizeof(V));                                               \
            total += sum;                                                                   \
        }                                                                                   \
        for (; l < f; l++) {                                                                \
            one = 0;                                                                        \
            STEP(T, tile, dy_row, dy_pixel, rows, across, t, l, g, plane, width, one);      \
            db[l] += one;                                                                   \
            rest += one;                                                                    \
        }                                                                                   \
    }                                                                                       \
    memcpy(lanes, &total, sizeof(V));                                                       \
    for (k = 0; k < W; k++) rest += lanes[k];                                               \
    return rest - rest == 0;                                                                \
}

/* A e for four values e (vectors or values): A (6 x 4) of F(4x4, 3x3), the turned A^T
 * above, has the rows (1 0 0 0), (1 1 1 1), (1 -1 1 -1), (1 2 4 8), (1 -2 4 -8), (0 0 0 1). */
#define CNNC_WINOGRAD4_GA(V, o, e) do {                                                     \
        V even_ = e[0] + e[2], odd_ = e[1] + e[3];                                          \
        V even4_ = e[0] + 4 * e[2], odd8_ = 2 * e[1] + 8 * e[3];                            \
        o[0] = e[0];                                                                        \
        o[1] = even_ + odd_;                                                                \
        o[2] = even_ - odd_;                                                                \
        o[3] = even4_ + odd8_;                                                              \
        o[4] = even4_ - odd8_;                                                              \
        o[5] = e[3];                                                                        \
    } while (0)

/* As CNNC_WINOGRAD_GRAD_STEP, for F(4x4, 3x3): the 36 positions p = 6 i + j of A dY A^T,
 * dY the 4x4 tile. */
#define CNNC_WINOGRAD4_GRAD_STEP(V, dy, dy_row, dy_pixel, rows, columns, t, l, g, plane,     \
                                 width, sum) do {                                           \
        V e_[4][4], column_[4], r_[6][4], o_[6], zero_;                                     \
        int i_, j_;                                                                         \
        memset(&zero_, 0, sizeof(V));                                                       \
        CNNC_WINOGRAD_GRAD_LOAD(V, e_, 4, dy, dy_row, dy_pixel, rows, columns, l, zero_, sum); \
        for (j_ = 0; j_ < 4; j_++) {                                                        \
            for (i_ = 0; i_ < 4; i_++) column_[i_] = e_[i_][j_];                            \
            CNNC_WINOGRAD4_GA(V, o_, column_);                                              \
            for (i_ = 0; i_ < 6; i_++) r_[i_][j_] = o_[i_];                                 \
        }                                                                                   \
        for (i_ = 0; i_ < 6; i_++) {                                                        \
            CNNC_WINOGRAD4_GA(V, o_, r_[i_]);                                               \
            for (j_ = 0; j_ < 6; j_++)                                                      \
                memcpy((g) + (6 * i_ + j_) * (plane) + (t) * (width) + (l), &o_[j_], sizeof(V)); \
        }                                                                                   \
    } while (0)

/* The transforms of one tile size, for float and double. */
#define CNNC_WINOGRAD_FUNCTIONS(PREFIX, IN_STEP, OUT_STEP, GRAD_STEP, TILE)                 \
    CNNC_WINOGRAD_INPUT(PREFIX##_input_float, float, cnnc_vf, IN_STEP)                     \
    CNNC_WINOGRAD_INPUT(PREFIX##_input_double, double, cnnc_vd, IN_STEP)                   \
    CNNC_WINOGRAD_GRADIENT(PREFIX##_gradient_float, float, cnnc_vf, GRAD_STEP, TILE)       \
    CNNC_WINOGRAD_GRADIENT(PREFIX##_gradient_double, double, cnnc_vd, GRAD_STEP, TILE)     \
    CNNC_WINOGRAD_OUTPUT(PREFIX##_output_float, float, cnnc_vf, cnnc_mask_f, f, OUT_STEP, TILE) \
    CNNC_WINOGRAD_OUTPUT(PREFIX##_output_double, double, cnnc_vd, cnnc_mask_d, d, OUT_STEP, TILE)

CNNC_WINOGRAD_FUNCTIONS(cnnc_winograd, CNNC_WINOGRAD_IN_STEP, CNNC_WINOGRAD_OUT_STEP,
                        CNNC_WINOGRAD_GRAD_STEP, 2)
CNNC_WINOGRAD_FUNCTIONS(cnnc_winograd4, CNNC_WINOGRAD4_IN_STEP, CNNC_WINOGRAD4_OUT_STEP,
                        CNNC_WINOGRAD4_GRAD_STEP, 4)

#endif
