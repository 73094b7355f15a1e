/*
 * A block of LAMMPS frames to stored rows in one pass: pick rows, unwrap with packed image flags, convert units;
 * and (scatter_rows, below) an MPI rank's atoms of a batch of frames into rows sorted by id.
 *
 * What iondiff_stream.io.sink.FrameSink does for every block of frames the LAMMPS hook hands over, in the
 * simulation's process. The NumPy version (fancy indexing, iondiff_stream.io.sink.unwrap_block, a mean, a cast)
 * makes ~8 passes over memory LAMMPS has just evicted; this makes one. Optional: without it the sink uses the
 * NumPy version (tests check that both give the same numbers; benchmarks/hook_cpu.py measures both).
 *
 * unwrap_rows(x, images, rows, h, bits, scale, out, centre) -> None
 *   x       float64 (m, n, 3), C-contiguous: wrapped positions, rows in LAMMPS's order
 *   images  int32 or int64 (m, n), C-contiguous: packed image flags, `bits` per dimension (10 or 21)
 *   rows    int64 (r,): the rows of x to take, each in [0, n)
 *   h       float64 (3, 3), C-contiguous: lattice vectors (rows)
 *   scale   float: unit factor (LAMMPS length unit -> Angstrom)
 *   out     float64 or float32 (m, r, 3), C-contiguous, writable, or None:
 *           out[k, j] = scale * (x[k, rows[j]] + n(images[k, rows[j]]) . h)
 *   centre  float64 (m, 3), C-contiguous, writable, or None: the mean of those unwrapped positions per frame
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *name, int ndim) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    if (view->ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "unwrap_rows: %s must have %d dimensions, got %d", name, ndim, view->ndim);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int is_format(const Py_buffer *v, char kind, Py_ssize_t size) {
    const char *f = v->format ? v->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    if (v->itemsize != size) return 0;
    if (kind == 'f') return *f == (size == 8 ? 'd' : 'f');
    return *f == 'i' || *f == 'l' || *f == 'q';  /* signed integers of `size` bytes */
}

static PyObject *unwrap_rows(PyObject *self, PyObject *args) {
    PyObject *ox, *oimg, *orows, *oh, *oout, *ocentre;
    int bits;
    double scale;
    if (!PyArg_ParseTuple(args, "OOOOidOO", &ox, &oimg, &orows, &oh, &bits, &scale, &oout, &ocentre)) return NULL;
    if (bits != 10 && bits != 21) {
        PyErr_Format(PyExc_ValueError, "unwrap_rows: image bits must be 10 or 21, got %d", bits);
        return NULL;
    }
    Py_buffer bx = {0}, bimg = {0}, brows = {0}, bh = {0}, bout = {0}, bc = {0};
    int have_out = oout != Py_None, have_c = ocentre != Py_None;
    PyObject *result = NULL;
    if (get_buffer(ox, &bx, 0, "x", 3) < 0) return NULL;
    if (get_buffer(oimg, &bimg, 0, "images", 2) < 0) goto done_x;
    if (get_buffer(orows, &brows, 0, "rows", 1) < 0) goto done_img;
    if (get_buffer(oh, &bh, 0, "h", 2) < 0) goto done_rows;
    if (have_out && get_buffer(oout, &bout, 1, "out", 3) < 0) goto done_h;
    if (have_c && get_buffer(ocentre, &bc, 1, "centre", 2) < 0) goto done_out;
    {
        Py_ssize_t m = bx.shape[0], n = bx.shape[1], r = brows.shape[0];
        int f32 = have_out && is_format(&bout, 'f', 4);
        if (!is_format(&bx, 'f', 8) || bx.shape[2] != 3) {
            PyErr_SetString(PyExc_TypeError, "unwrap_rows: x must be float64 of shape (m, n, 3)");
            goto done_c;
        }
        if (!(is_format(&bimg, 'i', 4) || is_format(&bimg, 'i', 8)) || bimg.shape[0] != m || bimg.shape[1] != n) {
            PyErr_SetString(PyExc_TypeError, "unwrap_rows: images must be int32 or int64 of shape (m, n)");
            goto done_c;
        }
        if (!is_format(&brows, 'i', 8)) {
            PyErr_SetString(PyExc_TypeError, "unwrap_rows: rows must be int64");
            goto done_c;
        }
        if (!is_format(&bh, 'f', 8) || bh.shape[0] != 3 || bh.shape[1] != 3) {
            PyErr_SetString(PyExc_TypeError, "unwrap_rows: h must be float64 of shape (3, 3)");
            goto done_c;
        }
        if (have_out && (!(f32 || is_format(&bout, 'f', 8)) || bout.shape[0] != m || bout.shape[1] != r
                         || bout.shape[2] != 3)) {
            PyErr_SetString(PyExc_TypeError, "unwrap_rows: out must be float64 or float32 of shape (m, r, 3)");
            goto done_c;
        }
        if (have_c && (!is_format(&bc, 'f', 8) || bc.shape[0] != m || bc.shape[1] != 3)) {
            PyErr_SetString(PyExc_TypeError, "unwrap_rows: centre must be float64 of shape (m, 3)");
            goto done_c;
        }
        const int64_t *rows = (const int64_t *)brows.buf;
        for (Py_ssize_t j = 0; j < r; j++) {
            if (rows[j] < 0 || rows[j] >= n) {
                PyErr_Format(PyExc_IndexError, "unwrap_rows: row %lld out of range for %zd atoms", (long long)rows[j], n);
                goto done_c;
            }
        }
        const double *x = (const double *)bx.buf, *h = (const double *)bh.buf;
        const int wide = bimg.itemsize == 8;
        const int32_t *img32 = (const int32_t *)bimg.buf;
        const int64_t *img64 = (const int64_t *)bimg.buf;
        const int64_t mask = ((int64_t)1 << bits) - 1, imgmax = (int64_t)1 << (bits - 1);
        const int diagonal = h[1] == 0.0 && h[2] == 0.0 && h[3] == 0.0 && h[5] == 0.0 && h[6] == 0.0 && h[7] == 0.0;
        double *o64 = have_out && !f32 ? (double *)bout.buf : NULL;
        float *o32 = have_out && f32 ? (float *)bout.buf : NULL;
        double *centre = have_c ? (double *)bc.buf : NULL;
        /* the GIL is kept: a few µs per frame, and a thread taking it meanwhile would make the simulation wait */
        for (Py_ssize_t k = 0; k < m; k++) {
            const double *xk = x + (size_t)k * (size_t)n * 3;
            double sx = 0.0, sy = 0.0, sz = 0.0;
            for (Py_ssize_t j = 0; j < r; j++) {
                const Py_ssize_t a = (Py_ssize_t)rows[j];
                const int64_t im = wide ? img64[(size_t)k * (size_t)n + (size_t)a] : (int64_t)img32[(size_t)k * (size_t)n + (size_t)a];
                const double nx = (double)((im & mask) - imgmax);
                const double ny = (double)(((im >> bits) & mask) - imgmax);
                const double nz = (double)((im >> (2 * bits)) - imgmax);
                const double *p = xk + 3 * a;
                double ux, uy, uz;
                if (diagonal) {
                    ux = p[0] + nx * h[0];
                    uy = p[1] + ny * h[4];
                    uz = p[2] + nz * h[8];
                } else {
                    ux = p[0] + (nx * h[0] + ny * h[3] + nz * h[6]);
                    uy = p[1] + (nx * h[1] + ny * h[4] + nz * h[7]);
                    uz = p[2] + (nx * h[2] + ny * h[5] + nz * h[8]);
                }
                ux *= scale;
                uy *= scale;
                uz *= scale;
                const size_t o = ((size_t)k * (size_t)r + (size_t)j) * 3;
                if (o64) {
                    o64[o] = ux;
                    o64[o + 1] = uy;
                    o64[o + 2] = uz;
                } else if (o32) {
                    o32[o] = (float)ux;
                    o32[o + 1] = (float)uy;
                    o32[o + 2] = (float)uz;
                }
                sx += ux;
                sy += uy;
                sz += uz;
            }
            if (centre) {
                const double inv = r > 0 ? 1.0 / (double)r : 0.0;
                centre[3 * k] = r > 0 ? sx * inv : 0.0;
                centre[3 * k + 1] = r > 0 ? sy * inv : 0.0;
                centre[3 * k + 2] = r > 0 ? sz * inv : 0.0;
            }
        }
        Py_INCREF(Py_None);
        result = Py_None;
    }
done_c:
    if (have_c) PyBuffer_Release(&bc);
done_out:
    if (have_out) PyBuffer_Release(&bout);
done_h:
    PyBuffer_Release(&bh);
done_rows:
    PyBuffer_Release(&brows);
done_img:
    PyBuffer_Release(&bimg);
done_x:
    PyBuffer_Release(&bx);
    return result;
}

/*
 * scatter_rows(ids, x, images, counts, all_ids, out_x, out_aux) -> int
 *   An MPI rank's local atoms of a batch of frames (frame after frame, `counts[k]` atoms of frame k) into the
 *   rows of every atom sorted by id, so that a sum over the ranks gives every frame whole:
 *   ids     int32 or int64 (u,): atom ids, frame after frame
 *   x       float64 (u, 3): positions
 *   images  int32 or int64 (u,): packed image flags
 *   counts  int64 (m,): atoms of every frame (they add up to u)
 *   all_ids int64 (N,), sorted: the rows
 *   out_x   float64 (>= m, N, 3), writable: out_x[k, row] = x (rows of atoms not here are left as they are)
 *   out_aux int64 (2, >= m, N), writable: out_aux[0, k, row] = image, out_aux[1, k, row] = 1
 *   Returns how many atoms had an id that is not in all_ids (not stored).
 */
static PyObject *scatter_rows(PyObject *self, PyObject *args) {
    PyObject *oids, *ox, *oimg, *ocounts, *oall, *oout, *oaux;
    if (!PyArg_ParseTuple(args, "OOOOOOO", &oids, &ox, &oimg, &ocounts, &oall, &oout, &oaux)) return NULL;
    Py_buffer bids = {0}, bx = {0}, bimg = {0}, bc = {0}, ball = {0}, bout = {0}, baux = {0};
    PyObject *result = NULL;
    if (get_buffer(oids, &bids, 0, "ids", 1) < 0) return NULL;
    if (get_buffer(ox, &bx, 0, "x", 2) < 0) goto d1;
    if (get_buffer(oimg, &bimg, 0, "images", 1) < 0) goto d2;
    if (get_buffer(ocounts, &bc, 0, "counts", 1) < 0) goto d3;
    if (get_buffer(oall, &ball, 0, "all_ids", 1) < 0) goto d4;
    if (get_buffer(oout, &bout, 1, "out_x", 3) < 0) goto d5;
    if (get_buffer(oaux, &baux, 1, "out_aux", 3) < 0) goto d6;
    {
        Py_ssize_t u = bids.shape[0], m = bc.shape[0], N = ball.shape[0];
        int ids8 = is_format(&bids, 'i', 8), img8 = is_format(&bimg, 'i', 8);
        if (!(ids8 || is_format(&bids, 'i', 4)) || !(img8 || is_format(&bimg, 'i', 4)) || bimg.shape[0] != u
            || !is_format(&bx, 'f', 8) || bx.shape[0] != u || bx.shape[1] != 3 || !is_format(&bc, 'i', 8)
            || !is_format(&ball, 'i', 8) || !is_format(&bout, 'f', 8) || bout.shape[0] < m || bout.shape[1] != N
            || bout.shape[2] != 3 || !is_format(&baux, 'i', 8) || baux.shape[0] != 2 || baux.shape[1] != bout.shape[0]
            || baux.shape[2] != N) {
            PyErr_SetString(PyExc_TypeError, "scatter_rows: arrays of the wrong type or shape (see _blocks.c)");
            goto d7;
        }
        const int64_t *counts = (const int64_t *)bc.buf, *all = (const int64_t *)ball.buf;
        Py_ssize_t total = 0;
        for (Py_ssize_t k = 0; k < m; k++) total += (Py_ssize_t)counts[k];
        if (total != u) {
            PyErr_Format(PyExc_ValueError, "scatter_rows: the frames' counts add up to %zd atoms, not %zd", total, u);
            goto d7;
        }
        const double *x = (const double *)bx.buf;
        double *ox3 = (double *)bout.buf;
        int64_t *aux = (int64_t *)baux.buf;
        const size_t plane = (size_t)baux.shape[1] * (size_t)N;
        long long unknown = 0;
        Py_ssize_t a = 0;
        for (Py_ssize_t k = 0; k < m; k++) {
            for (int64_t c = 0; c < counts[k]; c++, a++) {
                const int64_t id = ids8 ? ((const int64_t *)bids.buf)[a] : (int64_t)((const int32_t *)bids.buf)[a];
                Py_ssize_t lo = 0, hi = N;  /* first row with all[row] >= id */
                while (lo < hi) {
                    Py_ssize_t mid = lo + (hi - lo) / 2;
                    if (all[mid] < id) lo = mid + 1; else hi = mid;
                }
                if (lo >= N || all[lo] != id) {
                    unknown++;
                    continue;
                }
                const size_t row = (size_t)k * (size_t)N + (size_t)lo;
                ox3[3 * row] = x[3 * a];
                ox3[3 * row + 1] = x[3 * a + 1];
                ox3[3 * row + 2] = x[3 * a + 2];
                aux[row] = img8 ? ((const int64_t *)bimg.buf)[a] : (int64_t)((const int32_t *)bimg.buf)[a];
                aux[plane + row] = 1;
            }
        }
        result = PyLong_FromLongLong(unknown);
    }
d7:
    PyBuffer_Release(&baux);
d6:
    PyBuffer_Release(&bout);
d5:
    PyBuffer_Release(&ball);
d4:
    PyBuffer_Release(&bc);
d3:
    PyBuffer_Release(&bimg);
d2:
    PyBuffer_Release(&bx);
d1:
    PyBuffer_Release(&bids);
    return result;
}

static PyMethodDef methods[] = {
    {"scatter_rows", scatter_rows, METH_VARARGS,
     "scatter_rows(ids, x, images, counts, all_ids, out_x, out_aux) -> int: an MPI rank's atoms of a batch of frames "
     "into rows sorted by id (see _blocks.c); returns how many ids are not in all_ids."},
    {"unwrap_rows", unwrap_rows, METH_VARARGS,
     "unwrap_rows(x, images, rows, h, bits, scale, out, centre): rows of a block of frames unwrapped with packed "
     "image flags and scaled, into out (float64 or float32) and their mean per frame into centre (see _blocks.c)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef blocks_module = {
    PyModuleDef_HEAD_INIT, "_blocks",
    "A block of LAMMPS frames to stored rows in one pass (see iondiff_stream/io/_blocks.c).", -1, methods,
    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__blocks(void) { return PyModule_Create(&blocks_module); }
