/* The histogram blob's two hot conversions (store/histogram.py), compiled.
 *
 * Why: the writer stores every rollup row a commit touched, each with seven histograms, and encoding
 * them was about 1.4 encodes per span written (issue 15: 5 µs each in Python, where sorting the dict and
 * building two arrays costs most for a handful of buckets). The read side merges many rows' blobs into
 * dicts (every Overview, Trends and alert read). Both do exactly what the Python functions beside them do:
 * `encode` gives the same bytes (native int32 pairs in bucket order, empty buckets left out, None when
 * nothing is left) or raises the same exception types; `decode_into` makes the same dict updates.
 * `quantile_buckets` finds the buckets `quantiles` would (a chart asks it of every bucket it draws: the
 * 7-day Overview ~500 times a refresh, where sorting and summing in Python took 14 ms of the UI thread).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <math.h>

/* The SHA-256 (first 16 hex digits) of this file, given by hatch_build.py: store/histogram.py uses the
 * module only if it matches the source beside it (store/compiled.py). */
#ifndef HISTOGRAM_SOURCE_HASH
#define HISTOGRAM_SOURCE_HASH ""
#endif

typedef struct {
    int32_t bucket;
    int32_t count;
} Pair;

/* What array("i") accepts: an int (or an object with __index__) that fits a C int. */
static int as_int32(PyObject *obj, int32_t *out) {
    long value = PyLong_AsLong(obj);
    if (value == -1 && PyErr_Occurred()) return -1;
    if (value > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "signed integer is greater than maximum");
        return -1;
    }
    if (value < INT32_MIN) {
        PyErr_SetString(PyExc_OverflowError, "signed integer is less than minimum");
        return -1;
    }
    *out = (int32_t)value;
    return 0;
}

static int by_bucket(const void *a, const void *b) {
    int32_t x = ((const Pair *)a)->bucket, y = ((const Pair *)b)->bucket;
    return (x > y) - (x < y);
}

static PyObject *encode(PyObject *self, PyObject *counts) {
    if (!PyDict_Check(counts)) {
        PyErr_SetString(PyExc_TypeError, "encode() takes a dict");
        return NULL;
    }
    Py_ssize_t size = PyDict_GET_SIZE(counts);
    if (size == 0) Py_RETURN_NONE;
    Pair on_stack[64];
    Pair *pairs = size <= 64 ? on_stack : PyMem_Malloc((size_t)size * sizeof(Pair));
    if (pairs == NULL) return PyErr_NoMemory();
    Py_ssize_t position = 0, kept = 0;
    PyObject *key, *value, *result = NULL;
    while (PyDict_Next(counts, &position, &key, &value)) {
        Pair pair;
        /* As the Python path: every count must fit, a bucket only when its count is kept. */
        if (as_int32(value, &pair.count) < 0) goto done;
        if (pair.count == 0) continue;
        if (as_int32(key, &pair.bucket) < 0) goto done;
        pairs[kept++] = pair;
    }
    if (kept == 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    qsort(pairs, (size_t)kept, sizeof(Pair), by_bucket);
    result = PyBytes_FromStringAndSize(NULL, kept * (Py_ssize_t)sizeof(Pair));
    if (result != NULL) memcpy(PyBytes_AS_STRING(result), pairs, (size_t)kept * sizeof(Pair));
done:
    if (pairs != on_stack) PyMem_Free(pairs);
    return result;
}

#define DENSE_BUCKETS 1024

/* counts[bucket] += the sum of sign * count over the blob's pairs of that bucket, bucket by bucket in the
 * order each first appears: the dict sequential updates make, one update per bucket rather than per pair.
 * A blob the readers' SQL concatenated from many rows (group_concat, or the Overview's totals) repeats
 * each bucket once a row; summing them in C first saves a Python int and a dict update per repeat.
 * Returns 0, or -1 with an exception set. */
static int add_dense(const char *data, Py_ssize_t pairs, PyObject *counts, long sign) {
    long long sums[DENSE_BUCKETS];
    char seen[DENSE_BUCKETS];
    int32_t order[DENSE_BUCKETS];
    Py_ssize_t distinct = 0;
    memset(seen, 0, sizeof seen);
    for (Py_ssize_t i = 0; i < pairs; i++) {
        Pair pair;
        memcpy(&pair, data + i * (Py_ssize_t)sizeof(Pair), sizeof(Pair));
        if (!seen[pair.bucket]) {
            seen[pair.bucket] = 1;
            sums[pair.bucket] = 0;
            order[distinct++] = pair.bucket;
        }
        sums[pair.bucket] += sign * (long long)pair.count;  /* |count| ≤ 2^31, fewer than 2^31 pairs */
    }
    for (Py_ssize_t i = 0; i < distinct; i++) {
        PyObject *key = PyLong_FromLong(order[i]);
        if (key == NULL) return -1;
        PyObject *old = PyDict_GetItemWithError(counts, key); /* borrowed */
        PyObject *total;
        if (old == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(key);
                return -1;
            }
            total = PyLong_FromLongLong(sums[order[i]]);
        } else {
            PyObject *change = PyLong_FromLongLong(sums[order[i]]);
            total = change == NULL ? NULL : PyNumber_Add(old, change);
            Py_XDECREF(change);
        }
        if (total == NULL || PyDict_SetItem(counts, key, total) < 0) {
            Py_XDECREF(total);
            Py_DECREF(key);
            return -1;
        }
        Py_DECREF(total);
        Py_DECREF(key);
    }
    return 0;
}

/* counts[bucket] = counts.get(bucket, 0) + sign * count for every pair of the blob (None or empty: nothing). */
static PyObject *decode_into(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "decode_into(blob, counts: dict, sign)");
        return NULL;
    }
    PyObject *blob = args[0], *counts = args[1];
    long sign = PyLong_AsLong(args[2]);
    if (sign == -1 && PyErr_Occurred()) return NULL;
    if (blob == Py_None) Py_RETURN_NONE;
    Py_buffer view;
    if (PyObject_GetBuffer(blob, &view, PyBUF_SIMPLE) < 0) return NULL;
    if (view.len % (Py_ssize_t)sizeof(Pair) != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "bytes length not a multiple of item size");
        return NULL;
    }
    const char *data = view.buf;
    Py_ssize_t pairs = view.len / (Py_ssize_t)sizeof(Pair);
    /* Buckets are 0..MAX_BUCKET (700) as the writer makes them. A long blob is summed per bucket in C
     * first (a joined one repeats each bucket once a row); a short one goes pair by pair, where the
     * dense arrays would cost more than they save. Below 2^31 pairs no bucket's sum can overflow. */
    int dense = pairs > 64 && pairs < ((Py_ssize_t)1 << 31) && (sign == 1 || sign == -1);
    for (Py_ssize_t i = 0; i < pairs && dense; i++) {
        Pair pair;
        memcpy(&pair, data + i * (Py_ssize_t)sizeof(Pair), sizeof(Pair));
        dense = pair.bucket >= 0 && pair.bucket < DENSE_BUCKETS;
    }
    if (dense) {
        int failed = add_dense(data, pairs, counts, sign);
        PyBuffer_Release(&view);
        if (failed) return NULL;
        Py_RETURN_NONE;
    }
    for (Py_ssize_t i = 0; i < pairs; i++) {
        Pair pair;
        memcpy(&pair, data + i * (Py_ssize_t)sizeof(Pair), sizeof(Pair));
        PyObject *key = PyLong_FromLong(pair.bucket);
        if (key == NULL) goto fail;
        PyObject *old = PyDict_GetItemWithError(counts, key); /* borrowed */
        PyObject *total;
        if (old == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(key);
                goto fail;
            }
            total = PyLong_FromLong(sign * (long)pair.count);
        } else {
            PyObject *change = PyLong_FromLong(sign * (long)pair.count);
            total = change == NULL ? NULL : PyNumber_Add(old, change);
            Py_XDECREF(change);
        }
        if (total == NULL || PyDict_SetItem(counts, key, total) < 0) {
            Py_XDECREF(total);
            Py_DECREF(key);
            goto fail;
        }
        Py_DECREF(total);
        Py_DECREF(key);
    }
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&view);
    return NULL;
}

typedef struct {
    int32_t bucket;
    long long count;
} Count;

static int count_by_bucket(const void *a, const void *b) {
    int32_t x = ((const Count *)a)->bucket, y = ((const Count *)b)->bucket;
    return (x > y) - (x < y);
}

/* The bucket at each quantile's nearest rank (None for an empty histogram): the buckets of positive
 * count in order, the first whose running count reaches min(total, max(1, ceil(q * total))), as
 * store.histogram.quantiles finds it. NotImplemented when a bucket or count does not fit (int32 buckets,
 * long long counts and total): the caller computes those in Python. */
static PyObject *quantile_buckets(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "quantile_buckets(counts: dict, qs: sequence of float)");
        return NULL;
    }
    PyObject *counts = args[0];
    PyObject *qs = PySequence_Fast(args[1], "quantile_buckets: qs must be a sequence");
    if (qs == NULL) return NULL;
    Py_ssize_t nq = PySequence_Fast_GET_SIZE(qs);
    Py_ssize_t size = PyDict_GET_SIZE(counts);
    Count on_stack[128];
    Count *pairs = size <= 128 ? on_stack : PyMem_Malloc((size_t)size * sizeof(Count));
    PyObject *result = NULL;
    if (pairs == NULL) {
        Py_DECREF(qs);
        return PyErr_NoMemory();
    }
    Py_ssize_t position = 0, kept = 0;
    PyObject *key, *value;
    long long total = 0;
    while (PyDict_Next(counts, &position, &key, &value)) {
        int overflow = 0;
        if (!PyLong_Check(value) || !PyLong_Check(key)) goto not_implemented;
        long long count = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow) goto not_implemented;
        if (count == -1 && PyErr_Occurred()) goto done;
        if (count <= 0) continue;
        long bucket = PyLong_AsLongAndOverflow(key, &overflow);
        if (overflow || bucket > INT32_MAX || bucket < INT32_MIN) goto not_implemented;
        if (bucket == -1 && PyErr_Occurred()) goto done;
        if (count > LLONG_MAX - total) goto not_implemented;
        total += count;
        pairs[kept].bucket = (int32_t)bucket;
        pairs[kept].count = count;
        kept++;
    }
    /* Past 2^53 a double no longer holds the total exactly, and q * total would round apart from Python's. */
    if (total > (1LL << 53)) goto not_implemented;
    /* Buckets are 0..MAX_BUCKET (700) as the writer makes them: counted into a dense array and scanned in
     * order, no sort. Any other bucket (a hand-made histogram) takes a sort. */
    long long dense[DENSE_BUCKETS];
    int is_dense = 1;
    for (Py_ssize_t i = 0; i < kept && is_dense; i++) is_dense = pairs[i].bucket >= 0 && pairs[i].bucket < DENSE_BUCKETS;
    if (is_dense) {
        memset(dense, 0, sizeof dense);
        for (Py_ssize_t i = 0; i < kept; i++) dense[pairs[i].bucket] = pairs[i].count;  /* dict keys: unique */
    } else {
        qsort(pairs, (size_t)kept, sizeof(Count), count_by_bucket);
    }
    result = PyList_New(nq);
    if (result == NULL) goto done;
    for (Py_ssize_t i = 0; i < nq; i++) {
        double q = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(qs, i));
        if (q == -1.0 && PyErr_Occurred()) {
            Py_CLEAR(result);
            goto done;
        }
        if (!isfinite(q)) {  /* math.ceil's error (or a rank past any total), Python's to raise or find */
            Py_CLEAR(result);
            goto not_implemented;
        }
        if (kept == 0) {
            PyList_SET_ITEM(result, i, Py_NewRef(Py_None));
            continue;
        }
        double wanted = ceil(q * (double)total);
        long long rank = wanted < 1.0 ? 1 : (wanted >= (double)total ? total : (long long)wanted);
        long long running = 0;
        long found = 0;
        if (is_dense) {
            for (found = 0; found < DENSE_BUCKETS; found++) {
                running += dense[found];
                if (running >= rank) break;
            }
        } else {
            Py_ssize_t at = 0;
            for (; at < kept - 1; at++) {
                running += pairs[at].count;
                if (running >= rank) break;
            }
            found = pairs[at].bucket;
        }
        PyObject *bucket = PyLong_FromLong(found);
        if (bucket == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, bucket);
    }
    goto done;
not_implemented:
    PyErr_Clear();
    result = Py_NewRef(Py_NotImplemented);
done:
    if (pairs != on_stack) PyMem_Free(pairs);
    Py_DECREF(qs);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", (PyCFunction)encode, METH_O,
     "encode(counts: dict) -> bytes | None: store.histogram.encode, compiled"},
    {"decode_into", (PyCFunction)(void (*)(void))decode_into, METH_FASTCALL,
     "decode_into(blob, counts: dict, sign) -> None: store.histogram.decode_into, compiled"},
    {"quantile_buckets", (PyCFunction)(void (*)(void))quantile_buckets, METH_FASTCALL,
     "quantile_buckets(counts: dict, qs) -> list[int | None] | NotImplemented: the buckets of "
     "store.histogram.quantiles"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "store._histogram", "The histogram blob's encode and decode, compiled.", -1, methods,
};

PyMODINIT_FUNC PyInit__histogram(void) {
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    if (PyModule_AddStringConstant(module, "SOURCE_HASH", HISTOGRAM_SOURCE_HASH) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
