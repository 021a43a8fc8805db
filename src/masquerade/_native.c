/* masquerade._native: the package's compiled kernels, built ahead of time when the package is installed.
 *
 * Every CLI call is a fresh process, so a kernel compiled on first use (numba) costs its loading time (about 0.3 s
 * here) on every call; these are ordinary compiled functions, ready at import. Each one:
 *   - takes contiguous buffers (numpy arrays) and sizes, checks that every buffer is large enough for the sizes it
 *     is told, and raises ValueError otherwise (the Python wrappers check shapes, indices and dtypes first);
 *   - works on a range [start, stop) of its outer items (images, rows, elements) and releases the GIL, so the
 *     wrappers run ranges on several threads (masquerade._threads);
 *   - uses plain IEEE arithmetic in the order written (built with -ffp-contract=off: no fused multiply-add), so
 *     results do not depend on the machine's instruction set.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ---- buffer helpers -------------------------------------------------------------------------------------------- */

static int need(const Py_buffer *b, Py_ssize_t count, Py_ssize_t item, const char *what) {
    if (count < 0 || (item > 0 && count > PY_SSIZE_T_MAX / item) || b->len < count * item) {
        PyErr_Format(PyExc_ValueError, "%s: buffer of %zd bytes, need %zd items of %zd bytes", what, b->len,
                     count, item);
        return 0;
    }
    return 1;
}

/* a * b, or -1 when either is negative or the product overflows (need() then refuses it). */
static Py_ssize_t mul(Py_ssize_t a, Py_ssize_t b) {
    if (a < 0 || b < 0 || (a != 0 && b > PY_SSIZE_T_MAX / a)) return -1;
    return a * b;
}

static Py_ssize_t mul3(Py_ssize_t a, Py_ssize_t b, Py_ssize_t c) { return mul(mul(a, b), c); }

static int range_ok(Py_ssize_t start, Py_ssize_t stop, Py_ssize_t n) {
    if (start < 0 || stop > n || start > stop) {
        PyErr_SetString(PyExc_ValueError, "range outside the items");
        return 0;
    }
    return 1;
}

static void release(Py_buffer *bufs, int n) {
    for (int i = 0; i < n; i++)
        if (bufs[i].obj) PyBuffer_Release(&bufs[i]);
}

/* ---- DisguisedNets AES: quantise and move blocks into a byte buffer, and back ------------------------------------ */

/* round(255 v) to the nearest integer, ties to even (as numpy.rint), saturated to 0..255; NaN gives 0. */
static inline uint8_t quantise(float v) {
    float q = v * 255.0f;
    if (!(q > 0.0f)) return 0;
    if (q >= 255.0f) return 255;
    return (uint8_t)rintf(q);   /* the current (nearest-even) rounding mode, as numpy.rint */
}

/* quantise a row of n floats: SSE2 sixteen at a time where the machine has it (maxps returns its second operand
 * for a NaN, so NaN gives 0; cvtps2dq rounds to nearest even), the scalar form for the rest. */
static void quantise_row(const float *src, uint8_t *row, Py_ssize_t n) {
    Py_ssize_t q = 0;
#if defined(__SSE2__)
    const __m128 k255 = _mm_set1_ps(255.0f), zero = _mm_setzero_ps();
    for (; q + 16 <= n; q += 16) {
        __m128i v[4];
        for (int t = 0; t < 4; t++) {
            __m128 f = _mm_mul_ps(_mm_loadu_ps(src + q + 4 * t), k255);
            v[t] = _mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(f, zero), k255));
        }
        __m128i lo = _mm_packs_epi32(v[0], v[1]), hi = _mm_packs_epi32(v[2], v[3]);
        _mm_storeu_si128((__m128i *)(row + q), _mm_packus_epi16(lo, hi));
    }
#endif
    for (; q < n; q++) row[q] = quantise(src[q]);
}

/* runs i64 [P / r]: plane pixels r*i .. r*i+r-1 go to bytes runs[i] .. runs[i]+r-1 of the block buffer (a row of a
 * b×b block is r = b consecutive bytes on both sides). Returns a private copy of the table with every run checked
 * to lie inside the plane (NULL with an exception set otherwise): the kernel reads only the copy, so another
 * thread writing the caller's array after the check (the GIL is released) cannot move a run outside. */
static int64_t *checked_runs(const Py_buffer *runs, Py_ssize_t P, Py_ssize_t r, const char *where) {
    if (P < 0 || r < 1 || P % r || !need(runs, P / r, 8, where)) {
        if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s: the run length must divide the plane", where);
        return NULL;
    }
    int64_t *copy = malloc(sizeof(int64_t) * (size_t)(P / r + 1));
    if (!copy) { PyErr_NoMemory(); return NULL; }
    memcpy(copy, runs->buf, sizeof(int64_t) * (size_t)(P / r));
    for (Py_ssize_t i = 0; i < P / r; i++)
        if (copy[i] < 0 || copy[i] > P - r) {
            PyErr_Format(PyExc_ValueError, "%s: a run lies outside the plane", where);
            free(copy);
            return NULL;
        }
    return copy;
}

/* The block moves of the AES disguise, both directions, one body (the two entries below differ only in it):
 *   to_bytes: x f32 [planes, P] -> out u8 [planes, P]: quantise each plane into a scratch row (vectorised), then
 *             move its runs of r bytes to their places in the block buffer;
 *   else:     blocks u8 [planes, P] -> out f32 [planes, P]: move the runs into a scratch row, then out = row / 255.
 * args: (src, runs i64 [P / r], out, planes, P, r, start, stop); see checked_runs for the run table. */
static PyObject *move_blocks(PyObject *args, int to_bytes, const char *name) {
    Py_buffer b[3] = {{0}};
    Py_ssize_t planes, P, r, start, stop;
    if (!PyArg_ParseTuple(args, "y*y*w*nnnnn", &b[0], &b[1], &b[2], &planes, &P, &r, &start, &stop)) goto fail;
    if (!need(&b[0], mul(planes, P), to_bytes ? 4 : 1, name) ||
        !need(&b[2], mul(planes, P), to_bytes ? 1 : 4, name) || !range_ok(start, stop, planes))
        goto fail;
    int64_t *run = checked_runs(&b[1], P, r, name);
    if (!run) goto fail;
    uint8_t *row = malloc((size_t)P + 1);
    if (!row) { free(run); PyErr_NoMemory(); goto fail; }
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t nr = P / r;
    for (Py_ssize_t p = start; p < stop; p++) {
        if (to_bytes) {
            uint8_t *dst = (uint8_t *)b[2].buf + p * P;
            quantise_row((const float *)b[0].buf + p * P, row, P);
            if (r == 4)
                for (Py_ssize_t i = 0; i < nr; i++) memcpy(dst + run[i], row + 4 * i, 4);
            else
                for (Py_ssize_t i = 0; i < nr; i++) memcpy(dst + run[i], row + r * i, (size_t)r);
        } else {
            const uint8_t *s = (const uint8_t *)b[0].buf + p * P;
            float *d = (float *)b[2].buf + p * P;
            if (r == 4)
                for (Py_ssize_t i = 0; i < nr; i++) memcpy(row + 4 * i, s + run[i], 4);
            else
                for (Py_ssize_t i = 0; i < nr; i++) memcpy(row + r * i, s + run[i], (size_t)r);
            for (Py_ssize_t q = 0; q < P; q++) d[q] = (float)row[q] / 255.0f;
        }
    }
    Py_END_ALLOW_THREADS
    free(row);
    free(run);
    release(b, 3);
    Py_RETURN_NONE;
fail:
    release(b, 3);
    return NULL;
}

static PyObject *gather_u8(PyObject *self, PyObject *args) { return move_blocks(args, 1, "gather_u8"); }

static PyObject *scatter_f32(PyObject *self, PyObject *args) { return move_blocks(args, 0, "scatter_f32"); }

/* ---- ShuffleBits: permute the 32 bits of every word -------------------------------------------------------------- */

/* dest[i] = the output bit (LSB numbering) that input bit i moves to; perm is MSB-first (output bit j takes input
 * bit perm[j]); returns 0 when perm is not a permutation of 0..31. */
static int destinations(const uint8_t *perm, int inverse, uint32_t *dest) {
    uint32_t seen = 0;
    for (int j = 0; j < 32; j++) {
        uint32_t p = perm[j];   /* read once: another thread may write the array (the GIL is released) */
        if (p > 31 || (seen >> p) & 1u) return 0;
        seen |= 1u << p;
        if (inverse) dest[31 - j] = 31u - p;
        else dest[31 - p] = 31u - (uint32_t)j;
    }
    return 1;
}

static void build_lut(const uint32_t *dest, uint32_t lut[4][256]) {
    for (int b = 0; b < 4; b++) {
        lut[b][0] = 0;
        for (int t = 0; t < 8; t++) {
            uint32_t bit = 1u << dest[8 * b + t];
            int step = 1 << t;
            for (int v = 0; v < step; v++) lut[b][v | step] = lut[b][v] | bit;
        }
    }
}

static inline void apply_lut(const uint32_t *row, Py_ssize_t d, uint32_t lut[4][256], uint32_t *out) {
    for (Py_ssize_t j = 0; j < d; j++) {
        uint32_t w = row[j];
        out[j] = lut[0][w & 0xFFu] | lut[1][(w >> 8) & 0xFFu] | lut[2][(w >> 16) & 0xFFu] | lut[3][w >> 24];
    }
}

/* shuffle_rows(x u32 [n, d], perm u8 [r, 32], out u32 [n, d], n, d, r, inverse, start, stop): r = 1 applies one
 * permutation to every row (fixed key), r = n one per row (four 256-entry tables per permutation). */
static PyObject *shuffle_rows(PyObject *self, PyObject *args) {
    Py_buffer b[3] = {{0}};
    Py_ssize_t n, d, r, start, stop;
    int inverse;
    if (!PyArg_ParseTuple(args, "y*y*w*nnnpnn", &b[0], &b[1], &b[2], &n, &d, &r, &inverse, &start, &stop)) goto fail;
    if ((r != 1 && r != n) || !need(&b[0], mul(n, d), 4, "shuffle_rows x") ||
        !need(&b[1], mul(r, 32), 1, "shuffle_rows perm") ||
        !need(&b[2], mul(n, d), 4, "shuffle_rows out") || !range_ok(start, stop, n)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "shuffle_rows: one permutation, or one per row");
        goto fail;
    }
    const uint32_t *x = b[0].buf;
    const uint8_t *perm = b[1].buf;
    uint32_t *out = b[2].buf;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    uint32_t dest[32];
    uint32_t lut[4][256];
    if (r == 1) {
        if (destinations(perm, inverse, dest)) {
            build_lut(dest, lut);
            for (Py_ssize_t i = start; i < stop; i++) apply_lut(x + i * d, d, lut, out + i * d);
        } else bad = 1;
    } else {
        for (Py_ssize_t i = start; i < stop && !bad; i++) {
            if (!destinations(perm + 32 * i, inverse, dest)) { bad = 1; break; }
            build_lut(dest, lut);
            apply_lut(x + i * d, d, lut, out + i * d);
        }
    }
    Py_END_ALLOW_THREADS
    if (bad) { PyErr_SetString(PyExc_ValueError, "shuffle_rows: a key row is not a permutation of 0..31"); goto fail; }
    release(b, 3);
    Py_RETURN_NONE;
fail:
    release(b, 3);
    return NULL;
}

/* shuffle_elements(x u32 [m], perm u8 [m, 32], out u32 [m], m, inverse, start, stop): one permutation per word,
 * applied bit by bit. */
static PyObject *shuffle_elements(PyObject *self, PyObject *args) {
    Py_buffer b[3] = {{0}};
    Py_ssize_t m, start, stop;
    int inverse;
    if (!PyArg_ParseTuple(args, "y*y*w*npnn", &b[0], &b[1], &b[2], &m, &inverse, &start, &stop)) goto fail;
    if (!need(&b[0], m, 4, "shuffle_elements x") || !need(&b[1], mul(m, 32), 1, "shuffle_elements perm") ||
        !need(&b[2], m, 4, "shuffle_elements out") || !range_ok(start, stop, m))
        goto fail;
    const uint32_t *x = b[0].buf;
    const uint8_t *perm = b[1].buf;
    uint32_t *out = b[2].buf;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = start; i < stop && !bad; i++) {
        const uint8_t *p = perm + 32 * i;
        uint32_t w = x[i], res = 0, seen = 0;
        for (int j = 0; j < 32; j++) {
            uint32_t s = p[j];
            if (s > 31) { bad = 1; break; }
            seen |= 1u << s;
            if (inverse) res |= ((w >> (31 - j)) & 1u) << (31 - s);
            else res |= ((w >> (31 - s)) & 1u) << (31 - j);
        }
        if (seen != 0xFFFFFFFFu) bad = 1;
        else out[i] = res;
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "shuffle_elements: a key row is not a permutation of 0..31");
        goto fail;
    }
    release(b, 3);
    Py_RETURN_NONE;
fail:
    release(b, 3);
    return NULL;
}

/* fisher_yates(rand u32 [n, 31], out u8 [n, 32], n, start, stop): out[i] = a permutation of 0..31 drawn from 31
 * random words (index by multiply-shift: bias below 32 / 2^32). */
static PyObject *fisher_yates(PyObject *self, PyObject *args) {
    Py_buffer b[2] = {{0}};
    Py_ssize_t n, start, stop;
    if (!PyArg_ParseTuple(args, "y*w*nnn", &b[0], &b[1], &n, &start, &stop)) goto fail;
    if (!need(&b[0], mul(n, 31), 4, "fisher_yates rand") || !need(&b[1], mul(n, 32), 1, "fisher_yates out") ||
        !range_ok(start, stop, n))
        goto fail;
    const uint32_t *rand = b[0].buf;
    uint8_t *out = b[1].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = start; i < stop; i++) {
        uint8_t *row = out + 32 * i;
        const uint32_t *r = rand + 31 * i;
        for (int t = 0; t < 32; t++) row[t] = (uint8_t)t;
        for (int t = 31; t > 0; t--) {
            uint32_t j = (uint32_t)(((uint64_t)r[31 - t] * (uint64_t)(t + 1)) >> 32);
            uint8_t tmp = row[t];
            row[t] = row[j];
            row[j] = tmp;
        }
    }
    Py_END_ALLOW_THREADS
    release(b, 2);
    Py_RETURN_NONE;
fail:
    release(b, 2);
    return NULL;
}

/* ---- InstaHide: mix k images and flip signs in one pass ---------------------------------------------------------- */

/* mix_encode(priv f32 [np, C, P], pub f32 [nq, C, P], partners i64 [n, k], slot_public u8 [k], lam f32 [n, k],
 *            scale f32 [2, C], shift f32 [2, C], mask u8 [n, mb], flip, out f32 [n, C, P],
 *            np, nq, n, k, C, P, mb, start, stop)
 * out[i, c] = sign * sum_j lam[i, j] (scale[t_j, c] src_j[partners[i, j], c] + shift[t_j, c]), accumulated in float32
 * in the order: the shifts first, then slot by slot; the sign bit of pixel q = c P + p is bit 7 - q % 8 of byte
 * mask[i, q / 8] (numpy.packbits order), set = negative. */
static PyObject *mix_encode(PyObject *self, PyObject *args) {
    Py_buffer b[9] = {{0}};
    Py_ssize_t np_, nq, n, k, C, P, mb, start, stop;
    int flip;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*pw*nnnnnnnnn", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &b[6],
                          &b[7], &flip, &b[8], &np_, &nq, &n, &k, &C, &P, &mb, &start, &stop))
        goto fail;
    if (!need(&b[0], mul3(np_, C, P), 4, "mix_encode priv") || !need(&b[1], mul3(nq, C, P), 4, "mix_encode pub") ||
        !need(&b[2], mul(n, k), 8, "mix_encode partners") || !need(&b[3], k, 1, "mix_encode slot_public") ||
        !need(&b[4], mul(n, k), 4, "mix_encode lam") || !need(&b[5], mul(2, C), 4, "mix_encode scale") ||
        !need(&b[6], mul(2, C), 4, "mix_encode shift") || !need(&b[8], mul3(n, C, P), 4, "mix_encode out") ||
        !range_ok(start, stop, n))
        goto fail;
    if (flip && (mul(mb, 8) < mul(C, P) || mul(C, P) < 0 || !need(&b[7], mul(n, mb), 1, "mix_encode mask"))) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "mix_encode: the sign mask is too small");
        goto fail;
    }
    const float *priv = b[0].buf, *pub = b[1].buf, *lam = b[4].buf, *scale = b[5].buf, *shift = b[6].buf;
    const uint8_t *mask = b[7].buf;
    float *out = b[8].buf;
    /* private copies of the partner rows of this range and of the slot types, checked here and read alone by the
     * kernel: another thread writing the caller's arrays after the check cannot send a read outside an image set */
    Py_ssize_t rows = stop - start;
    int64_t *partners = malloc(sizeof(int64_t) * (size_t)(rows * k + 1));
    uint8_t *slot_public = malloc((size_t)k + 1);
    if (!partners || !slot_public) { free(partners); free(slot_public); PyErr_NoMemory(); goto fail; }
    memcpy(partners, (const int64_t *)b[2].buf + start * k, sizeof(int64_t) * (size_t)(rows * k));
    memcpy(slot_public, b[3].buf, (size_t)k);
    for (Py_ssize_t i = 0; i < rows; i++)
        for (Py_ssize_t j = 0; j < k; j++) {
            int64_t idx = partners[i * k + j];
            if (idx < 0 || idx >= (slot_public[j] ? nq : np_)) {
                free(partners);
                free(slot_public);
                PyErr_SetString(PyExc_ValueError, "mix_encode: a partner index lies outside its image set");
                goto fail;
            }
        }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = start; i < stop; i++) {
        for (Py_ssize_t c = 0; c < C; c++) {
            float *row = out + (i * C + c) * P;
            float off = 0.0f;
            for (Py_ssize_t j = 0; j < k; j++) off += lam[i * k + j] * shift[(slot_public[j] ? C : 0) + c];
            for (Py_ssize_t p = 0; p < P; p++) row[p] = off;
            for (Py_ssize_t j = 0; j < k; j++) {
                int t = slot_public[j] ? 1 : 0;
                float w = lam[i * k + j] * scale[t * C + c];
                const float *src = (t ? pub : priv) + (partners[(i - start) * k + j] * C + c) * P;
                for (Py_ssize_t p = 0; p < P; p++) row[p] += w * src[p];
            }
            if (flip) {
                const uint8_t *m = mask + i * mb;
                Py_ssize_t base = c * P;
                for (Py_ssize_t p = 0; p < P; p++) {
                    Py_ssize_t q = base + p;
                    if ((m[q >> 3] >> (7 - (q & 7))) & 1) row[p] = -row[p];
                }
            }
        }
    }
    Py_END_ALLOW_THREADS
    free(partners);
    free(slot_public);
    release(b, 9);
    Py_RETURN_NONE;
fail:
    release(b, 9);
    return NULL;
}

/* ---- SSIM ------------------------------------------------------------------------------------------------------ */

/* Float SSIM. Each plane is first read into contiguous float64 scratch (from any element strides: NCHW, or the NHWC
 * memory behind a permuted view, without a copy of the batch), then filtered in passes that run over whole rows, so
 * the compiler vectorises them; where the compiler can make several versions of a function (GCC and Clang on x86-64
 * Linux), an AVX2 one is picked at load time. No fused multiply-add in any version, so they agree to the bit. */
#if defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(__INTEL_COMPILER)
#define VERSIONS __attribute__((target_clones("avx2", "default")))
#else
#define VERSIONS
#endif

typedef struct {
    Py_ssize_t n, c, h, w;  /* element strides */
} strides4;

/* SSIM from the five local statistics (means and raw second moments) of a row of wo positions. */
static inline void ssim_formula(const double *restrict ux, const double *restrict uy, const double *restrict mxx,
                                const double *restrict myy, const double *restrict mxy, Py_ssize_t wo, double c1,
                                double c2, double cov, double *restrict res) {
    for (Py_ssize_t j = 0; j < wo; j++) {
        double vx = cov * (mxx[j] - ux[j] * ux[j]), vy = cov * (myy[j] - uy[j] * uy[j]);
        double vxy = cov * (mxy[j] - ux[j] * uy[j]);
        res[j] = ((2.0 * ux[j] * uy[j] + c1) * (2.0 * vxy + c2)) /
                 ((ux[j] * ux[j] + uy[j] * uy[j] + c1) * (vx + vy + c2));
    }
}

/* The five column statistics of rows, kept as running sums: add (sign +1) or remove (sign -1) one row. */
static inline void row_stats(double *restrict cx, double *restrict cy, double *restrict cxx, double *restrict cyy,
                             double *restrict cxy, const double *restrict xr, const double *restrict yr, double u,
                             Py_ssize_t W) {
    for (Py_ssize_t j = 0; j < W; j++) {
        double a = xr[j], v = yr[j];
        cx[j] += u * a; cy[j] += u * v; cxx[j] += u * (a * a); cyy[j] += u * (v * v); cxy[j] += u * (a * v);
    }
}

/* dst[j] = (sum of src[j .. j+k-1]) * scale, as differences of running totals (pre: W + 1 doubles). */
static inline void box_sums(const double *restrict src, double *restrict dst, double *restrict pre, Py_ssize_t W,
                            Py_ssize_t k, double scale) {
    double run = 0.0;
    pre[0] = 0.0;
    for (Py_ssize_t j = 0; j < W; j++) pre[j + 1] = run += src[j];
    for (Py_ssize_t j = 0; j < W - k + 1; j++) dst[j] = (pre[j + k] - pre[j]) * scale;
}

/* dst[j] = sum over t of wt[t] src[j + t]. */
static inline void weighted_sums(const double *restrict src, double *restrict dst, const double *restrict wt,
                                 Py_ssize_t W, Py_ssize_t k) {
    Py_ssize_t wo = W - k + 1;
    for (Py_ssize_t j = 0; j < wo; j++) dst[j] = wt[0] * src[j];
    for (Py_ssize_t t = 1; t < k; t++)
        for (Py_ssize_t j = 0; j < wo; j++) dst[j] += wt[t] * src[j + t];
}

/* Sum of SSIM over the valid positions of one plane (xa, ya: H×W float64, contiguous). box: the uniform window by
 * running column sums (the multiplier u = ±1 is exact); otherwise the weights wt[0..k) along columns, then rows.
 * scratch: 12 W + 1 doubles. */
VERSIONS static double ssim_plane(const double *restrict xa, const double *restrict ya, Py_ssize_t H, Py_ssize_t W,
                                  const double *restrict wt, Py_ssize_t k, int box, double c1, double c2, double cov,
                                  double *restrict scratch) {
    Py_ssize_t wo = W - k + 1;
    double *c[5], *h[5], *res = scratch + 10 * W, *pre = scratch + 11 * W;
    for (int q = 0; q < 5; q++) {
        c[q] = scratch + q * W;
        h[q] = scratch + (5 + q) * W;
    }
    double total = 0.0, inv = 1.0 / (double)(k * k);
    if (box)
        for (Py_ssize_t j = 0; j < 5 * W; j++) scratch[j] = 0.0;
    for (Py_ssize_t i = 0; i < H; i++) {
        if (box) {   /* the column sums of rows i-k+1 .. i: add row i, drop row i-k */
            row_stats(c[0], c[1], c[2], c[3], c[4], xa + i * W, ya + i * W, 1.0, W);
            if (i >= k) row_stats(c[0], c[1], c[2], c[3], c[4], xa + (i - k) * W, ya + (i - k) * W, -1.0, W);
            if (i < k - 1) continue;
            for (int q = 0; q < 5; q++) box_sums(c[q], h[q], pre, W, k, inv);
        } else {     /* the weighted column sums of rows i .. i+k-1, then along the row */
            if (i + k > H) break;
            for (Py_ssize_t j = 0; j < 5 * W; j++) scratch[j] = 0.0;
            for (Py_ssize_t t = 0; t < k; t++)
                row_stats(c[0], c[1], c[2], c[3], c[4], xa + (i + t) * W, ya + (i + t) * W, wt[t], W);
            for (int q = 0; q < 5; q++) weighted_sums(c[q], h[q], wt, W, k);
        }
        ssim_formula(h[0], h[1], h[2], h[3], h[4], wo, c1, c2, cov, res);
        for (Py_ssize_t j = 0; j < wo; j++) total += res[j];
    }
    return total;
}

/* Whether any value is NaN or infinite: all exponent bits set, tested on the bits (integer operations vectorise). */
VERSIONS static Py_ssize_t count_nonfinite(const double *v, Py_ssize_t n) {
    uint64_t any = 0;
    for (Py_ssize_t q = 0; q < n; q++) {
        uint64_t u;
        memcpy(&u, v + q, 8);
        any |= (uint64_t)((u & 0x7ff0000000000000ull) == 0x7ff0000000000000ull);
    }
    return (Py_ssize_t)any;
}

/* Widen span[0], span[1] to the smallest and largest of v. Only its result for finite values matters (a NaN or an
 * infinity is refused through count_nonfinite), so GCC may use vector min/max here. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("finite-math-only", "no-signed-zeros")))
#endif
VERSIONS static void widen_span(const double *v, Py_ssize_t n, double *span) {
    double lo = span[0], hi = span[1];
    for (Py_ssize_t q = 0; q < n; q++) {
        lo = v[q] < lo ? v[q] : lo;
        hi = v[q] > hi ? v[q] : hi;
    }
    span[0] = lo;
    span[1] = hi;
}

/* Read one image (C planes) into float64 scratch dst[c][H][W], widening the running minimum and maximum (span[0],
 * span[1]) and counting values that are not finite into *bad: the caller checks the data range from these, no
 * separate pass. Channels-last memory (an NHWC array read as NCHW) is read in its own order, once, and
 * de-interleaved; planar memory plane by plane, with a plain copy for contiguous float64 rows. */
static void load_image(const char *base, int dbl, strides4 s, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, double *dst,
                       double *span, Py_ssize_t *bad) {
    Py_ssize_t hw = H * W;
    if (s.c < s.w && C > 1) {
        for (Py_ssize_t i = 0; i < H; i++)
            for (Py_ssize_t j = 0; j < W; j++) {
                Py_ssize_t o = i * s.h + j * s.w;
                for (Py_ssize_t c = 0; c < C; c++)
                    dst[c * hw + i * W + j] = dbl ? ((const double *)base)[o + c * s.c]
                                                  : (double)((const float *)base)[o + c * s.c];
            }
    } else {
        for (Py_ssize_t c = 0; c < C; c++)
            for (Py_ssize_t i = 0; i < H; i++) {
                double *restrict row = dst + c * hw + i * W;
                Py_ssize_t o = c * s.c + i * s.h;
                if (s.w == 1 && dbl)
                    memcpy(row, (const double *)base + o, sizeof(double) * (size_t)W);
                else if (s.w == 1)
                    for (Py_ssize_t j = 0; j < W; j++) row[j] = (double)((const float *)base)[o + j];
                else
                    for (Py_ssize_t j = 0; j < W; j++)
                        row[j] = dbl ? ((const double *)base)[o + j * s.w] : (double)((const float *)base)[o + j * s.w];
            }
    }
    *bad += count_nonfinite(dst, C * hw);
    widen_span(dst, C * hw, span);
}

/* The largest element offset the strides reach, or -1 for a negative stride or size, or an overflow. */
static Py_ssize_t reach(strides4 s, Py_ssize_t n, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w) {
    if (n < 1 || c < 1 || h < 1 || w < 1) return -1;
    Py_ssize_t t[4] = {mul(n - 1, s.n), mul(c - 1, s.c), mul(h - 1, s.h), mul(w - 1, s.w)}, total = 0;
    for (int i = 0; i < 4; i++) {
        if (t[i] < 0 || t[i] > PY_SSIZE_T_MAX - total) return -1;
        total += t[i];
    }
    return total;
}

/* The checks every SSIM entry makes on a batch of pairs: both image buffers hold every element their strides reach
 * (items of `item` bytes), out holds n values and span 3 n, and [start, stop) lies inside the batch. */
static int pair_ok(const Py_buffer *x, const Py_buffer *y, const Py_buffer *out, const Py_buffer *span, strides4 sx,
                   strides4 sy, Py_ssize_t n, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t item,
                   Py_ssize_t start, Py_ssize_t stop) {
    if (n > 0) {
        Py_ssize_t rx = reach(sx, n, C, H, W), ry = reach(sy, n, C, H, W);
        if (rx < 0 || ry < 0 || !need(x, rx + 1, item, "ssim x") || !need(y, ry + 1, item, "ssim y")) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "ssim: negative strides or sizes");
            return 0;
        }
    }
    return need(out, n, 8, "ssim out") && need(span, mul(3, n), 8, "ssim span") && range_ok(start, stop, n);
}

/* ssim_sep(x, y, double_input, weights f64 [k], out f64 [n], span f64 [n, 3], n, C, H, W, x strides (4),
 * y strides (4), c1, c2, cov, start, stop): the mean SSIM of each pair; strides in elements. span[i] receives the
 * smallest and largest pixel of pair i and its count of non-finite pixels. The uniform window (all weights 1/k)
 * takes running sums, any other the weighted filter. */
static PyObject *ssim_sep(PyObject *self, PyObject *args) {
    Py_buffer b[5] = {{0}};
    Py_ssize_t n, C, H, W, start, stop;
    strides4 sx, sy;
    int dbl;
    double c1, c2, cov;
    if (!PyArg_ParseTuple(args, "y*y*py*w*w*nnnnnnnnnnnndddnn", &b[0], &b[1], &dbl, &b[2], &b[3], &b[4], &n, &C,
                          &H, &W, &sx.n, &sx.c, &sx.h, &sx.w, &sy.n, &sy.c, &sy.h, &sy.w, &c1, &c2, &cov, &start,
                          &stop))
        goto fail;
    Py_ssize_t item = dbl ? 8 : 4, k = b[2].len / 8;
    if (C < 1 || H < 1 || W < 1 || k < 1 || k > H || k > W) {
        PyErr_SetString(PyExc_ValueError, "ssim_sep: bad image size or window");
        goto fail;
    }
    if (!pair_ok(&b[0], &b[1], &b[3], &b[4], sx, sy, n, C, H, W, item, start, stop)) goto fail;
    const double *wt = b[2].buf;
    double *out = b[3].buf, *spans = b[4].buf;
    int box = 1;
    for (Py_ssize_t t = 0; t < k; t++) box &= wt[t] == 1.0 / (double)k;
    Py_ssize_t wo = W - k + 1, ho = H - k + 1;
    /* small images (CIFAR-size) are read whole, channels de-interleaved in one pass; large ones plane by plane, so
     * the scratch stays two planes */
    int whole = mul3(C, H, W) >= 0 && mul3(C, H, W) <= (1 << 16);
    Py_ssize_t cells = mul3(mul(2, whole ? C : 1), H, W), extra = mul(18, W);
    if (cells < 0 || extra < 0 || cells > PY_SSIZE_T_MAX / 16 - extra) {
        PyErr_SetString(PyExc_ValueError, "ssim_sep: image too large");
        goto fail;
    }
    double *scratch = malloc(sizeof(double) * (size_t)(extra + 1 + cells));
    if (!scratch) { PyErr_NoMemory(); goto fail; }
    Py_BEGIN_ALLOW_THREADS
    double *xa = scratch + 18 * W + 1, *ya = xa + (whole ? C : 1) * H * W;
    for (Py_ssize_t im = start; im < stop; im++) {
        double total = 0.0, span[2] = {HUGE_VAL, -HUGE_VAL};
        Py_ssize_t bad = 0;
        const char *bx = (const char *)b[0].buf + im * sx.n * item, *by = (const char *)b[1].buf + im * sy.n * item;
        if (whole) {
            load_image(bx, dbl, sx, C, H, W, xa, span, &bad);
            load_image(by, dbl, sy, C, H, W, ya, span, &bad);
            for (Py_ssize_t c = 0; c < C; c++)
                total += ssim_plane(xa + c * H * W, ya + c * H * W, H, W, wt, k, box, c1, c2, cov, scratch);
        } else {
            for (Py_ssize_t c = 0; c < C; c++) {
                load_image(bx + c * sx.c * item, dbl, sx, 1, H, W, xa, span, &bad);
                load_image(by + c * sy.c * item, dbl, sy, 1, H, W, ya, span, &bad);
                total += ssim_plane(xa, ya, H, W, wt, k, box, c1, c2, cov, scratch);
            }
        }
        out[im] = total / (double)(C * ho * wo);
        spans[3 * im] = span[0];
        spans[3 * im + 1] = span[1];
        spans[3 * im + 2] = (double)bad;
    }
    Py_END_ALLOW_THREADS
    free(scratch);
    release(b, 5);
    Py_RETURN_NONE;
fail:
    release(b, 5);
    return NULL;
}

/* ssim_box_u8(x u8, y u8, out f64 [n], span f64 [n, 3], n, C, H, W, x strides (4), y strides (4), win, c1n, c2n,
 * cov, start, stop): mean SSIM per pair with the uniform win×win window, strides in elements (an NHWC array read as
 * NCHW needs no copy). Window sums of x, y, x², y², xy are exact integers (int64); the formula is evaluated from them
 * in float64 (c1n, c2n are C1, C2 times npts²). span[i] receives pair i's smallest and largest pixel (and 0). */
static PyObject *ssim_box_u8(PyObject *self, PyObject *args) {
    Py_buffer b[4] = {{0}};
    Py_ssize_t n, C, H, W, win, start, stop;
    strides4 sx, sy;
    double c1n, c2n, cov;
    if (!PyArg_ParseTuple(args, "y*y*w*w*nnnnnnnnnnnnndddnn", &b[0], &b[1], &b[2], &b[3], &n, &C, &H, &W, &sx.n,
                          &sx.c, &sx.h, &sx.w, &sy.n, &sy.c, &sy.h, &sy.w, &win, &c1n, &c2n, &cov, &start, &stop))
        goto fail;
    /* win <= 255: window sums of squares stay below 2^53, exact in the float64 formula */
    if (C < 1 || H < 1 || W < 1 || win < 1 || win > H || win > W || win > 255) {
        PyErr_SetString(PyExc_ValueError, "ssim_box_u8: bad image size or window");
        goto fail;
    }
    if (!pair_ok(&b[0], &b[1], &b[2], &b[3], sx, sy, n, C, H, W, 1, start, stop)) goto fail;
    const uint8_t *X = b[0].buf, *Y = b[1].buf;
    double *out = b[2].buf, *spans = b[3].buf;
    Py_ssize_t cells = mul(mul(2, H), W);
    if (cells < 0 || cells > PY_SSIZE_T_MAX / 16 - 5 * W) {
        PyErr_SetString(PyExc_ValueError, "ssim_box_u8: image too large");
        goto fail;
    }
    int64_t *col = malloc(sizeof(int64_t) * 5 * (size_t)W + sizeof(int32_t) * (size_t)cells);
    if (!col) { PyErr_NoMemory(); goto fail; }
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t ho = H - win + 1, wo = W - win + 1, npts = win * win;
    int64_t *cx = col, *cy = col + W, *cxx = col + 2 * W, *cyy = col + 3 * W, *cxy = col + 4 * W;
    int32_t *x = (int32_t *)(col + 5 * W), *y = x + H * W;
    for (Py_ssize_t im = start; im < stop; im++) {
        double total = 0.0;
        int32_t lo = 255, hi = 0;
        for (Py_ssize_t c = 0; c < C; c++) {
            const uint8_t *px = X + im * sx.n + c * sx.c, *py = Y + im * sy.n + c * sy.c;
            for (Py_ssize_t i = 0; i < H; i++)
                for (Py_ssize_t j = 0; j < W; j++) {
                    int32_t a = px[i * sx.h + j * sx.w], v = py[i * sy.h + j * sy.w];
                    x[i * W + j] = a;
                    y[i * W + j] = v;
                    lo = a < lo ? a : lo; lo = v < lo ? v : lo;
                    hi = a > hi ? a : hi; hi = v > hi ? v : hi;
                }
            memset(col, 0, sizeof(int64_t) * 5 * (size_t)W);
            for (Py_ssize_t i = 0; i < win - 1; i++)
                for (Py_ssize_t j = 0; j < W; j++) {
                    int64_t a = x[i * W + j], v = y[i * W + j];
                    cx[j] += a; cy[j] += v; cxx[j] += a * a; cyy[j] += v * v; cxy[j] += a * v;
                }
            for (Py_ssize_t i = 0; i < ho; i++) {
                Py_ssize_t r = i + win - 1;
                for (Py_ssize_t j = 0; j < W; j++) {
                    int64_t a = x[r * W + j], v = y[r * W + j];
                    cx[j] += a; cy[j] += v; cxx[j] += a * a; cyy[j] += v * v; cxy[j] += a * v;
                }
                int64_t sx_ = 0, sy_ = 0, sxx = 0, syy = 0, sxy = 0;
                for (Py_ssize_t j = 0; j < win - 1; j++) {
                    sx_ += cx[j]; sy_ += cy[j]; sxx += cxx[j]; syy += cyy[j]; sxy += cxy[j];
                }
                for (Py_ssize_t j = 0; j < wo; j++) {
                    Py_ssize_t kk = j + win - 1;
                    sx_ += cx[kk]; sy_ += cy[kk]; sxx += cxx[kk]; syy += cyy[kk]; sxy += cxy[kk];
                    int64_t sxsy = sx_ * sy_;
                    double a1 = 2.0 * (double)sxsy + c1n;
                    double b1 = (double)(sx_ * sx_ + sy_ * sy_) + c1n;
                    double a2 = 2.0 * cov * (double)(npts * sxy - sxsy) + c2n;
                    double b2 = cov * (double)(npts * (sxx + syy) - sx_ * sx_ - sy_ * sy_) + c2n;
                    total += (a1 * a2) / (b1 * b2);
                    sx_ -= cx[j]; sy_ -= cy[j]; sxx -= cxx[j]; syy -= cyy[j]; sxy -= cxy[j];
                }
                for (Py_ssize_t j = 0; j < W; j++) {
                    int64_t a = x[i * W + j], v = y[i * W + j];
                    cx[j] -= a; cy[j] -= v; cxx[j] -= a * a; cyy[j] -= v * v; cxy[j] -= a * v;
                }
            }
        }
        out[im] = total / (double)(C * ho * wo);
        spans[3 * im] = lo;
        spans[3 * im + 1] = hi;
        spans[3 * im + 2] = 0.0;
    }
    Py_END_ALLOW_THREADS
    free(col);
    release(b, 4);
    Py_RETURN_NONE;
fail:
    release(b, 4);
    return NULL;
}

/* ---- module ---------------------------------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"gather_u8", gather_u8, METH_VARARGS, "AES disguise: quantise pixels and move them into the block buffer."},
    {"scatter_f32", scatter_f32, METH_VARARGS, "AES disguise: bytes back to float pixels in plane order."},
    {"shuffle_rows", shuffle_rows, METH_VARARGS, "ShuffleBits: one bit permutation, or one per row."},
    {"shuffle_elements", shuffle_elements, METH_VARARGS, "ShuffleBits: one bit permutation per word."},
    {"fisher_yates", fisher_yates, METH_VARARGS, "Uniform permutations of 0..31 from random words."},
    {"mix_encode", mix_encode, METH_VARARGS, "InstaHide: mix images and flip signs in one pass."},
    {"ssim_box_u8", ssim_box_u8, METH_VARARGS, "SSIM of uint8 pairs with the uniform window (exact sums)."},
    {"ssim_sep", ssim_sep, METH_VARARGS, "SSIM of float pairs with a separable window, float64 arithmetic."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "masquerade's compiled kernels.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
