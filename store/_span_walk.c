/* The walk over a span's attributes (store/span_walk.py), compiled: the decoder's, and the indexer's.
 *
 * Why: the walk is the hottest Python loop of serve (issue 15): for each of a span's ~25
 * attributes, upb's Python wrappers build a KeyValue and an AnyValue object, the oneof is asked
 * which field is set, and the value is copied out; then the key's class and slots are looked up.
 * Here the span's bytes (which the decoder stores) are read in
 * one pass, and the same dict and list updates are made as the Python loop makes.
 *
 * The bytes are upb's own serialization of a span it parsed and validated, or that span's bytes in
 * the request upb parsed it from (span_ranges, below): strings are UTF-8, and a serialization has each
 * field once, in field-number order. Every read is bounds-checked all the same, and
 * anything else (a group, a field with an unexpected wire type, a field met twice, two members of
 * a oneof, an integer past 64 bits, text that is not UTF-8) raises `Unsupported`, possibly after
 * some of the containers were updated: the caller then starts again from fresh containers on the
 * Python path, so a partial update is never used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* The SHA-256 (first 16 hex digits) of this file, given by hatch_build.py: store/span_walk.py uses the
 * module only if it matches the source beside it, so an editable install whose C changed since it was
 * built runs the Python walk instead of an older walk. */
#ifndef WALK_SOURCE_HASH
#define WALK_SOURCE_HASH ""
#endif

static PyObject *Unsupported;

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} Reader;

static int read_varint(Reader *r, uint64_t *out) {
    uint64_t value = 0;
    int shift = 0;
    while (r->p < r->end) {
        uint8_t byte = *r->p++;
        if (shift == 63 && byte > 1) return -1; /* past 64 bits */
        value |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *out = value;
            return 0;
        }
        shift += 7;
        if (shift > 63) return -1;
    }
    return -1;
}

/* Reads a field's tag; 0 at the end of the message, -1 on a malformed or unsupported tag. */
static int read_tag(Reader *r, uint32_t *field, uint32_t *wire) {
    uint64_t tag;
    if (r->p >= r->end) return 0;
    if (read_varint(r, &tag) < 0) return -1;
    *field = (uint32_t)(tag >> 3);
    *wire = (uint32_t)(tag & 7);
    if (*field == 0 || tag >> 32) return -1;
    return 1;
}

static int read_length(Reader *r, const uint8_t **start, Py_ssize_t *length) {
    uint64_t n;
    if (read_varint(r, &n) < 0) return -1;
    if (n > (uint64_t)(r->end - r->p)) return -1;
    *start = r->p;
    *length = (Py_ssize_t)n;
    r->p += n;
    return 0;
}

static int skip_field(Reader *r, uint32_t wire) {
    uint64_t ignored;
    const uint8_t *start;
    Py_ssize_t length;
    switch (wire) {
    case 0:
        return read_varint(r, &ignored);
    case 1:
        if (r->end - r->p < 8) return -1;
        r->p += 8;
        return 0;
    case 2:
        return read_length(r, &start, &length);
    case 5:
        if (r->end - r->p < 4) return -1;
        r->p += 4;
        return 0;
    default: /* groups: not in OTLP */
        return -1;
    }
}

static PyObject *array_of_scalars(const uint8_t *data, Py_ssize_t size, int *complex);

/* An AnyValue's scalar as a new reference, or an array of scalars as a list (when `arrays`); *complex
 * set (and NULL returned, no error) for a kvlist, bytes, or an array holding anything but scalars,
 * which the caller converts through upb. Py_None for no value. */
static PyObject *any_scalar(const uint8_t *data, Py_ssize_t size, int *complex, int arrays) {
    Reader r = {data, data + size};
    uint32_t field, wire;
    int status;
    int seen = 0;
    PyObject *value = NULL;
    *complex = 0;
    while ((status = read_tag(&r, &field, &wire)) == 1) {
        if (field >= 1 && field <= 7) {
            if (seen) goto unsupported; /* two members of the oneof: upb never writes that */
            seen = 1;
        }
        switch (field) {
        case 1: { /* string_value */
            const uint8_t *start;
            Py_ssize_t length;
            if (wire != 2 || read_length(&r, &start, &length) < 0) goto unsupported;
            value = PyUnicode_DecodeUTF8((const char *)start, length, NULL);
            if (value == NULL) goto unsupported;
            break;
        }
        case 2: { /* bool_value */
            uint64_t v;
            if (wire != 0 || read_varint(&r, &v) < 0) goto unsupported;
            value = PyBool_FromLong(v != 0);
            break;
        }
        case 3: { /* int_value: int64, two's complement */
            uint64_t v;
            if (wire != 0 || read_varint(&r, &v) < 0) goto unsupported;
            value = PyLong_FromLongLong((long long)v);
            if (value == NULL) return NULL;
            break;
        }
        case 4: { /* double_value */
            double d;
            if (wire != 1 || r.end - r.p < 8) goto unsupported;
            memcpy(&d, r.p, 8); /* little-endian on the wire; checked at import */
            r.p += 8;
            value = PyFloat_FromDouble(d);
            if (value == NULL) return NULL;
            break;
        }
        case 5: /* array_value: a list here when every value in it is a scalar (finish reasons, tags) */
            if (arrays) {
                const uint8_t *start;
                Py_ssize_t length;
                if (wire != 2 || read_length(&r, &start, &length) < 0) goto unsupported;
                value = array_of_scalars(start, length, complex);
                if (value == NULL && !*complex) goto unsupported;
                break;
            }
            /* fall through: an array in an array goes through upb (no recursion here) */
        case 6: case 7: /* kvlist, bytes */
            *complex = 1;
            if (skip_field(&r, wire) < 0) goto unsupported;
            break;
        default:
            if (skip_field(&r, wire) < 0) goto unsupported;
        }
    }
    if (status < 0) goto unsupported;
    if (*complex) return NULL;
    if (value == NULL) Py_RETURN_NONE;
    return value;
unsupported:
    Py_XDECREF(value);
    if (!PyErr_Occurred()) PyErr_SetString(Unsupported, "attribute value not in upb's canonical form");
    else if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        PyErr_SetString(Unsupported, "attribute string is not UTF-8");
    }
    *complex = 0;
    return NULL;
}

static PyObject *scalar(const uint8_t *data, Py_ssize_t size, int *complex) {
    return any_scalar(data, size, complex, 1);
}

/* An ArrayValue's values as a list of scalars, as any_value gives them; *complex set (NULL, no error)
 * as soon as one is not a scalar. */
static PyObject *array_of_scalars(const uint8_t *data, Py_ssize_t size, int *complex) {
    Reader r = {data, data + size};
    uint32_t field, wire;
    int status;
    PyObject *list = PyList_New(0);
    if (list == NULL) return NULL;
    while ((status = read_tag(&r, &field, &wire)) == 1) {
        if (field != 1) {
            if (skip_field(&r, wire) < 0) goto unsupported;
            continue;
        }
        const uint8_t *start;
        Py_ssize_t length;
        if (wire != 2 || read_length(&r, &start, &length) < 0) goto unsupported;
        PyObject *element = any_scalar(start, length, complex, 0);
        if (element == NULL) {
            Py_DECREF(list);
            return NULL; /* not a scalar (*complex set), or an error */
        }
        int failed = PyList_Append(list, element);
        Py_DECREF(element);
        if (failed) {
            Py_DECREF(list);
            return NULL;
        }
    }
    if (status < 0) goto unsupported;
    return list;
unsupported:
    Py_DECREF(list);
    PyErr_SetString(Unsupported, "attribute value not in upb's canonical form");
    return NULL;
}

static int append_index(PyObject *list, Py_ssize_t index) {
    PyObject *number = PyLong_FromSsize_t(index);
    if (number == NULL) return -1;
    int status = PyList_Append(list, number);
    Py_DECREF(number);
    return status;
}

/* Puts `value` into every slot of the key whose priority beats the one there. */
static int fill_slots(PyObject *slot, PyObject *values, PyObject *priorities, PyObject *value) {
    if (!PyTuple_Check(slot)) {
        PyErr_SetString(PyExc_TypeError, "a slot is a tuple of (field index, priority)");
        return -1;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(slot);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = PyTuple_GET_ITEM(slot, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "a slot is a tuple of (field index, priority)");
            return -1;
        }
        Py_ssize_t field_index = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 0));
        long priority = PyLong_AsLong(PyTuple_GET_ITEM(pair, 1));
        if (PyErr_Occurred()) return -1;
        if (field_index < 0 || field_index >= PyList_GET_SIZE(values) || field_index >= PyList_GET_SIZE(priorities)) {
            PyErr_SetString(PyExc_IndexError, "slot field index out of range");
            return -1;
        }
        long current = PyLong_AsLong(PyList_GET_ITEM(priorities, field_index));
        if (current == -1 && PyErr_Occurred()) return -1;
        if (priority < current) {
            Py_INCREF(PyTuple_GET_ITEM(pair, 1));
            PyList_SetItem(priorities, field_index, PyTuple_GET_ITEM(pair, 1));
            Py_INCREF(value);
            PyList_SetItem(values, field_index, value);
        }
    }
    return 0;
}

/* One attribute (a KeyValue's bytes) at `index`. */
static int walk_attribute(const uint8_t *data, Py_ssize_t size, Py_ssize_t index, PyObject **a) {
    PyObject *key_class = a[0], *classify = a[1], *slots = a[2], *values = a[3], *priorities = a[4];
    PyObject *found = a[5], *complex_value = a[6], *content_indexes = a[7], *drop_indexes = a[8];
    long known = PyLong_AsLong(a[9]), content = PyLong_AsLong(a[10]), drop = PyLong_AsLong(a[11]);
    Reader r = {data, data + size};
    uint32_t field, wire;
    int status;
    const uint8_t *key_start = (const uint8_t *)"", *value_start = NULL;
    Py_ssize_t key_length = 0, value_length = 0;
    int key_seen = 0, value_seen = 0;
    while ((status = read_tag(&r, &field, &wire)) == 1) {
        if (field == 1) {
            if (wire != 2 || key_seen || read_length(&r, &key_start, &key_length) < 0) goto unsupported;
            key_seen = 1;
        } else if (field == 2) {
            if (wire != 2 || value_seen || read_length(&r, &value_start, &value_length) < 0) goto unsupported;
            value_seen = 1;
        } else if (skip_field(&r, wire) < 0) {
            goto unsupported;
        }
    }
    if (status < 0) goto unsupported;

    PyObject *key = PyUnicode_DecodeUTF8((const char *)key_start, key_length, NULL);
    if (key == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) goto unsupported_clear;
        return -1;
    }
    long cls;
    PyObject *cls_object = PyDict_GetItemWithError(key_class, key); /* borrowed */
    if (cls_object != NULL) {
        cls = PyLong_AsLong(cls_object);
    } else {
        if (PyErr_Occurred()) goto fail_key;
        PyObject *result = PyObject_CallOneArg(classify, key);
        if (result == NULL) goto fail_key;
        cls = PyLong_AsLong(result);
        Py_DECREF(result);
    }
    if (cls == -1 && PyErr_Occurred()) goto fail_key;
    if (cls) {
        if (cls == drop) {
            Py_DECREF(key);
            return append_index(drop_indexes, index);
        }
        if (cls & known) {
            int complex = 0;
            PyObject *value;
            if (value_start == NULL) {
                value = Py_NewRef(Py_None);
            } else {
                value = scalar(value_start, value_length, &complex);
                if (value == NULL && !complex) goto fail_key;
            }
            if (complex) {
                PyObject *number = PyLong_FromSsize_t(index);
                if (number == NULL) goto fail_key;
                value = PyObject_CallOneArg(complex_value, number);
                Py_DECREF(number);
                if (value == NULL) goto fail_key;
            }
            if (PyDict_SetItem(found, key, value) < 0) {
                Py_DECREF(value);
                goto fail_key;
            }
            int empty = value == Py_None || (PyUnicode_Check(value) && PyUnicode_GET_LENGTH(value) == 0);
            if (!empty) {
                PyObject *slot = PyDict_GetItemWithError(slots, key);
                if (slot == NULL && PyErr_Occurred()) {
                    Py_DECREF(value);
                    goto fail_key;
                }
                if (slot != NULL && fill_slots(slot, values, priorities, value) < 0) {
                    Py_DECREF(value);
                    goto fail_key;
                }
            }
            Py_DECREF(value);
        }
        if ((cls & content) && append_index(content_indexes, index) < 0) goto fail_key;
    }
    Py_DECREF(key);
    return 0;
fail_key:
    Py_DECREF(key);
    return -1;
unsupported_clear:
    PyErr_Clear();
unsupported:
    if (!PyErr_Occurred()) PyErr_SetString(Unsupported, "attribute not in upb's canonical form");
    return -1;
}

static PyObject *walk_attributes(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 13) {
        PyErr_SetString(PyExc_TypeError, "walk_attributes takes 13 arguments");
        return NULL;
    }
    Py_buffer blob;
    if (PyObject_GetBuffer(args[0], &blob, PyBUF_SIMPLE) < 0) return NULL;
    for (int i = 1; i <= 12; i++) {
        int ok = i == 2 || i == 7 ? PyCallable_Check(args[i])
               : i == 1 || i == 3 || i == 6 ? PyDict_Check(args[i])
               : i == 4 || i == 5 || i == 8 || i == 9 ? PyList_Check(args[i])
               : PyLong_Check(args[i]);
        if (!ok) {
            PyBuffer_Release(&blob);
            PyErr_Format(PyExc_TypeError, "walk_attributes: argument %d has the wrong type", i);
            return NULL;
        }
    }
    Reader r = {(const uint8_t *)blob.buf, (const uint8_t *)blob.buf + blob.len};
    uint32_t field, wire;
    int status;
    Py_ssize_t index = 0;
    while ((status = read_tag(&r, &field, &wire)) == 1) {
        if (field == 9) { /* Span.attributes */
            const uint8_t *start;
            Py_ssize_t length;
            if (wire != 2 || read_length(&r, &start, &length) < 0) goto unsupported;
            if (walk_attribute(start, length, index, (PyObject **)args + 1) < 0) goto fail;
            index++;
        } else if (skip_field(&r, wire) < 0) {
            goto unsupported;
        }
    }
    if (status < 0) goto unsupported;
    PyBuffer_Release(&blob);
    return PyLong_FromSsize_t(index);
unsupported:
    PyErr_SetString(Unsupported, "span not in upb's canonical form");
fail:
    PyBuffer_Release(&blob);
    return NULL;
}

/* The attributes of one event (its KeyValues' bytes between start and end) into a new dict: every
 * key, its value as any_value gives it; an array, a kvlist or bytes through complex_value(event, index). */
static PyObject *event_attributes(const uint8_t *start, const uint8_t *end, Py_ssize_t event_index,
                                  PyObject *complex_value) {
    PyObject *attributes = PyDict_New();
    if (attributes == NULL) return NULL;
    Reader r = {start, end};
    uint32_t field, wire;
    int status;
    Py_ssize_t index = 0;
    while ((status = read_tag(&r, &field, &wire)) == 1) {
        if (field != 3) {
            if (skip_field(&r, wire) < 0) goto unsupported;
            continue;
        }
        const uint8_t *kv;
        Py_ssize_t kv_length;
        if (wire != 2 || read_length(&r, &kv, &kv_length) < 0) goto unsupported;
        Reader k = {kv, kv + kv_length};
        const uint8_t *key_start = (const uint8_t *)"", *value_start = NULL;
        Py_ssize_t key_length = 0, value_length = 0;
        int key_seen = 0, value_seen = 0, kv_status;
        while ((kv_status = read_tag(&k, &field, &wire)) == 1) {
            if (field == 1) {
                if (wire != 2 || key_seen || read_length(&k, &key_start, &key_length) < 0) goto unsupported;
                key_seen = 1;
            } else if (field == 2) {
                if (wire != 2 || value_seen || read_length(&k, &value_start, &value_length) < 0) goto unsupported;
                value_seen = 1;
            } else if (skip_field(&k, wire) < 0) {
                goto unsupported;
            }
        }
        if (kv_status < 0) goto unsupported;
        PyObject *key = PyUnicode_DecodeUTF8((const char *)key_start, key_length, NULL);
        if (key == NULL) goto unsupported_or_fail;
        int complex = 0;
        PyObject *value = value_start == NULL ? Py_NewRef(Py_None) : scalar(value_start, value_length, &complex);
        if (complex) {
            value = PyObject_CallFunction(complex_value, "nn", event_index, index);
        }
        if (value == NULL || PyDict_SetItem(attributes, key, value) < 0) {
            Py_DECREF(key);
            Py_XDECREF(value);
            goto fail;
        }
        Py_DECREF(key);
        Py_DECREF(value);
        index++;
    }
    if (status < 0) goto unsupported;
    return attributes;
unsupported_or_fail:
    if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) goto fail;
    PyErr_Clear();
unsupported:
    if (!PyErr_Occurred()) PyErr_SetString(Unsupported, "event attribute not in upb's canonical form");
fail:
    Py_DECREF(attributes);
    return NULL;
}

/* content_events(span_bytes, names, complex_value) -> [(name, time_unix_nano, attributes), ...] for
 * the span's events whose name is in the set `names`, in order. */
static PyObject *content_events(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 3 || !PyAnySet_Check(args[1]) || !PyCallable_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "content_events(span_bytes, names: set, complex_value)");
        return NULL;
    }
    Py_buffer blob;
    if (PyObject_GetBuffer(args[0], &blob, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *events = PyList_New(0);
    if (events == NULL) {
        PyBuffer_Release(&blob);
        return NULL;
    }
    Reader r = {(const uint8_t *)blob.buf, (const uint8_t *)blob.buf + blob.len};
    uint32_t field, wire;
    int status;
    Py_ssize_t event_index = 0;
    while ((status = read_tag(&r, &field, &wire)) == 1) {
        if (field != 11) { /* Span.events */
            if (skip_field(&r, wire) < 0) goto unsupported;
            continue;
        }
        const uint8_t *event;
        Py_ssize_t event_length;
        if (wire != 2 || read_length(&r, &event, &event_length) < 0) goto unsupported;
        /* First the name and time (upb writes them before the attributes, but do not rely on it). */
        Reader e = {event, event + event_length};
        uint64_t time_ns = 0;
        const uint8_t *name_start = (const uint8_t *)"";
        Py_ssize_t name_length = 0;
        int name_seen = 0, time_seen = 0, event_status;
        while ((event_status = read_tag(&e, &field, &wire)) == 1) {
            if (field == 1) {
                if (wire != 1 || time_seen || e.end - e.p < 8) goto unsupported;
                memcpy(&time_ns, e.p, 8);
                e.p += 8;
                time_seen = 1;
            } else if (field == 2) {
                if (wire != 2 || name_seen || read_length(&e, &name_start, &name_length) < 0) goto unsupported;
                name_seen = 1;
            } else if (skip_field(&e, wire) < 0) {
                goto unsupported;
            }
        }
        if (event_status < 0) goto unsupported;
        PyObject *name = PyUnicode_DecodeUTF8((const char *)name_start, name_length, NULL);
        if (name == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) goto fail;
            PyErr_Clear();
            goto unsupported;
        }
        int wanted = PySet_Contains(args[1], name);
        if (wanted < 0) {
            Py_DECREF(name);
            goto fail;
        }
        if (wanted) {
            PyObject *attributes = event_attributes(event, event + event_length, event_index, args[2]);
            PyObject *item = attributes == NULL ? NULL : Py_BuildValue("(NKN)", name, (unsigned long long)time_ns,
                                                                       attributes);
            if (item == NULL) {
                if (attributes == NULL) Py_DECREF(name);
                goto fail;
            }
            int appended = PyList_Append(events, item);
            Py_DECREF(item);
            if (appended < 0) goto fail;
        } else {
            Py_DECREF(name);
        }
        event_index++;
    }
    if (status < 0) goto unsupported;
    PyBuffer_Release(&blob);
    return events;
unsupported:
    if (!PyErr_Occurred()) PyErr_SetString(Unsupported, "span not in upb's canonical form");
fail:
    PyBuffer_Release(&blob);
    Py_DECREF(events);
    return NULL;
}

/* Appends (start, end) of every Span in `data[start:end]` read as a ScopeSpans (its field 2), or in every
 * ScopeSpans of a ResourceSpans (depth 1), or of every ResourceSpans of an ExportTraceServiceRequest
 * (depth 2): the order upb's repeated fields list them in. -1 on anything else than length-delimited
 * messages there. */
static int span_ranges_in(PyObject *out, const uint8_t *base, const uint8_t *start, const uint8_t *end, int depth) {
    Reader r = {start, end};
    uint32_t field, wire;
    int status;
    /* ExportTraceServiceRequest.resource_spans = 1; ResourceSpans.scope_spans = 2; ScopeSpans.spans = 2 */
    uint32_t wanted = depth == 2 ? 1 : 2;
    while ((status = read_tag(&r, &field, &wire)) == 1) {
        if (field != wanted) {
            if (skip_field(&r, wire) < 0) return -1;
            continue;
        }
        const uint8_t *inner;
        Py_ssize_t length;
        if (wire != 2 || read_length(&r, &inner, &length) < 0) return -1;
        if (depth > 0) {
            if (span_ranges_in(out, base, inner, inner + length, depth - 1) < 0) return -1;
            continue;
        }
        PyObject *range = Py_BuildValue("(nn)", (Py_ssize_t)(inner - base), (Py_ssize_t)(inner - base) + length);
        if (range == NULL) return -2;
        int appended = PyList_Append(out, range);
        Py_DECREF(range);
        if (appended < 0) return -2;
    }
    return status < 0 ? -1 : 0;
}

static PyObject *span_ranges(PyObject *module, PyObject *arg) {
    (void)module;
    Py_buffer body;
    if (PyObject_GetBuffer(arg, &body, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        PyBuffer_Release(&body);
        return NULL;
    }
    const uint8_t *start = (const uint8_t *)body.buf;
    int status = span_ranges_in(out, start, start, start + body.len, 2);
    PyBuffer_Release(&body);
    if (status < 0) {
        Py_DECREF(out);
        if (status == -1) PyErr_SetString(Unsupported, "not an ExportTraceServiceRequest this walk reads");
        return NULL;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"span_ranges", (PyCFunction)span_ranges, METH_O,
     "span_ranges(request_bytes) -> [(start, end)] of each Span's bytes in a serialized\n"
     "ExportTraceServiceRequest, in the order upb lists the spans"},
    {"content_events", (PyCFunction)(void (*)(void))content_events, METH_FASTCALL,
     "content_events(span_bytes, names, complex_value) -> [(name, time_unix_nano, attributes)] of the\n"
     "span's events named in `names`; complex_value(event_index, attribute_index) for arrays, maps, bytes"},
    {"walk_attributes", (PyCFunction)(void (*)(void))walk_attributes, METH_FASTCALL,
     "walk_attributes(span_bytes, key_class, classify, slots, values, priorities, found, complex_value,\n"
     "                content_indexes, drop_indexes, KNOWN, CONTENT, DROP) -> number of attributes\n\n"
     "The decoder's attribute walk over a serialized Span (see store/span_walk.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "store._span_walk", "The decoder's attribute walk, compiled.", -1, methods,
};

PyMODINIT_FUNC PyInit__span_walk(void) {
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1) {
        PyErr_SetString(PyExc_ImportError, "store._span_walk reads doubles as little-endian");
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    Unsupported = PyErr_NewException("store._span_walk.Unsupported", PyExc_ValueError, NULL);
    if (Unsupported == NULL || PyModule_AddObjectRef(module, "Unsupported", Unsupported) < 0 ||
        PyModule_AddStringConstant(module, "SOURCE_HASH", WALK_SOURCE_HASH) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
