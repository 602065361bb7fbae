/* The histogram blob's two hot conversions (store/histogram.py), compiled.
 *
 * Why: the writer stores every rollup row a commit touched, each with seven histograms, and encoding
 * them was about 1.4 encodes per span written (issue 15: 5 µs each in Python, where sorting the dict and
 * building two arrays costs most for a handful of buckets). The read side merges many rows' blobs into
 * dicts (every Overview, Trends and alert read). Both do exactly what the Python functions beside them do:
 * `encode` gives the same bytes (native int32 pairs in bucket order, empty buckets left out, None when
 * nothing is left) or raises the same exception types; `decode_into` makes the same dict updates.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

static PyMethodDef methods[] = {
    {"encode", (PyCFunction)encode, METH_O,
     "encode(counts: dict) -> bytes | None: store.histogram.encode, compiled"},
    {"decode_into", (PyCFunction)(void (*)(void))decode_into, METH_FASTCALL,
     "decode_into(blob, counts: dict, sign) -> None: store.histogram.decode_into, compiled"},
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
