/*
 * The fix external hook's per-step callback in C: copy a frame into the current block, nothing else.
 *
 * LAMMPS calls `iondiff_stream_callback` at every stored step (fix external pf/callback, registered with
 * the state below as its `ptr`). A frame that continues the current block (same atoms in the same order,
 * the same run, the step `every` after the last one, the block neither empty nor full nor older than
 * `max_age` s) is copied here: positions, image flags, step, simulation time and wall time, into arrays
 * owned by Python (lammps_hooks.fix_external._Staging). Every other frame goes to the Python callback
 * (`slow`), which starts blocks, hands full ones to the store and handles runs, atom sorts and box
 * changes. Without this module the Python callback takes every frame (the same results, more CPU):
 * benchmarks/hook_cpu.py measures both.
 *
 * The state is mirrored by lammps_hooks.fix_external._FastState (ctypes); keep the two in the same order.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

typedef void *(*extract_atom_fn)(void *, const char *);
typedef void (*callback_fn)(void *, int64_t, int, void *, double **, double **);

typedef struct {
    int64_t every;          /* steps between stored frames */
    int64_t enabled;        /* 0: every frame goes to `slow` */
    callback_fn slow;       /* the Python callback (same signature as this one) */
    void *slow_ptr;         /* its first argument */
    void *lmp;              /* LAMMPS handle */
    extract_atom_fn extract_atom;
    double *atime;          /* LAMMPS's clock: Update::atime, atimestep, dt */
    int64_t *atimestep;
    double *dt;
    double *x;              /* block arrays: (cap, nlocal, 3) float64 */
    char *img;              /* (cap, nlocal) image flags, img_size bytes each */
    int64_t *steps;         /* (cap,) */
    double *times;          /* (cap,) LAMMPS time unit */
    double *wall;           /* (cap,) Unix s */
    int64_t cap;            /* frames a block holds */
    int64_t n;              /* frames in the block */
    int64_t nlocal;         /* atoms per frame of the block */
    int64_t img_size;       /* bytes per image flag */
    char *ids;              /* the block's atom ids, ids_bytes bytes */
    int64_t ids_bytes;
    int64_t last_step;      /* the last frame stored (by either callback) */
    int64_t last_atimestep; /* Update::atimestep then: it moves at every run's end */
    double started;         /* CLOCK_MONOTONIC s at the block's first frame */
    double max_age;         /* a block older than this goes to the store */
    int64_t n_fast;         /* frames copied here */
    /* flat mode (MPI ranks): frames of any local atoms one after the other, ids copied with them */
    int64_t flat;           /* 1: flat mode */
    char *ids_flat;         /* (atom_cap,) ids, ids_size bytes each */
    int64_t *nl;            /* (cap,) atoms of every frame */
    int64_t used;           /* atoms stored so far in the batch */
    int64_t atom_cap;       /* atoms the flat arrays hold */
    int64_t ids_size;       /* bytes per id */
} stage_t;

static double clock_s(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void iondiff_stream_callback(void *ptr, int64_t step, int nlocal, void *tag, double **x, double **f) {
    stage_t *s = (stage_t *)ptr;
    int64_t k = s->n;
    if (step % s->every) {
        if (nlocal > 0 && f && f[0]) memset(f[0], 0, (size_t)nlocal * 3 * sizeof(double));
        return;
    }
    if (s->flat) {
        /* MPI rank: the batch is gathered by Python when it holds `cap` frames (every rank at the same step); a
         * batch's first frame is taken here too when it continues the run and box of the batch before */
        int64_t u = s->used;
        if (!s->enabled || k < 0 || k >= s->cap - 1 || nlocal < 0 || u + nlocal > s->atom_cap
            || step != s->last_step + s->every || *s->atimestep != s->last_atimestep) {
            s->slow(s->slow_ptr, step, nlocal, tag, x, f);
            return;
        }
        void *img = nlocal > 0 ? s->extract_atom(s->lmp, "image") : NULL;
        if (nlocal > 0 && (!img || !x || !x[0] || !tag)) {
            s->slow(s->slow_ptr, step, nlocal, tag, x, f);
            return;
        }
        if (nlocal > 0) {
            if (f && f[0]) memset(f[0], 0, (size_t)nlocal * 3 * sizeof(double));
            memcpy(s->x + (size_t)u * 3, x[0], (size_t)nlocal * 3 * sizeof(double));
            memcpy(s->img + (size_t)u * (size_t)s->img_size, img, (size_t)nlocal * (size_t)s->img_size);
            memcpy(s->ids_flat + (size_t)u * (size_t)s->ids_size, tag, (size_t)nlocal * (size_t)s->ids_size);
        }
        s->nl[k] = nlocal;
        s->steps[k] = step;
        s->times[k] = *s->atime + (double)(step - *s->atimestep) * *s->dt;
        s->wall[k] = clock_s(CLOCK_REALTIME);
        s->used = u + nlocal;
        s->last_step = step;
        s->n = k + 1;
        s->n_fast += 1;
        return;
    }
    if (!s->enabled || k <= 0 || k >= s->cap || nlocal <= 0 || (int64_t)nlocal != s->nlocal
        || step != s->last_step + s->every || *s->atimestep != s->last_atimestep
        || memcmp(tag, s->ids, (size_t)s->ids_bytes) != 0
        || clock_s(CLOCK_MONOTONIC) - s->started > s->max_age) {
        s->slow(s->slow_ptr, step, nlocal, tag, x, f); /* it zeroes the forces too */
        return;
    }
    if (f && f[0]) memset(f[0], 0, (size_t)nlocal * 3 * sizeof(double)); /* no forces from us */
    void *img = s->extract_atom(s->lmp, "image");
    if (!img || !x || !x[0]) {
        s->slow(s->slow_ptr, step, nlocal, tag, x, f);
        return;
    }
    memcpy(s->x + (size_t)k * (size_t)nlocal * 3, x[0], (size_t)nlocal * 3 * sizeof(double));
    memcpy(s->img + (size_t)k * (size_t)nlocal * (size_t)s->img_size, img, (size_t)nlocal * (size_t)s->img_size);
    s->steps[k] = step;
    s->times[k] = *s->atime + (double)(step - *s->atimestep) * *s->dt;
    s->wall[k] = clock_s(CLOCK_REALTIME);
    s->last_step = step;
    s->n = k + 1;
    s->n_fast += 1;
}

static struct PyModuleDef stage_module = {
    PyModuleDef_HEAD_INIT, "_stage",
    "The fix external hook's per-step copy in C (address of the callback: `callback`; see _stage.c).",
    -1, NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__stage(void) {
    PyObject *m = PyModule_Create(&stage_module);
    if (m == NULL) return NULL;
    if (PyModule_AddObject(m, "callback", PyLong_FromVoidPtr((void *)&iondiff_stream_callback)) < 0
        || PyModule_AddIntConstant(m, "state_size", (long)sizeof(stage_t)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
