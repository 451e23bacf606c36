/*
 * The compiled part of the ink map: the paper estimate's window medians
 * (quill.preprocess._local_median), the largest cost of a line's preprocessing in NumPy.
 *
 * window_medians(cells, size) reads an (h, w) uint8 grid with its edges repeated and returns,
 * as h * ceil(w / 2) bytes, the median of the size x size window centred on every other cell
 * of each row (columns 0, 2, 4, ...): exactly what NumPy's partition of the same windows
 * gives (tests/core/test_preprocess_compiled.py). Each row's window slides two columns at a
 * time over a histogram of its 256 grey levels, and the median moves from the last one by
 * the few levels the changed columns shift it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define ABI_VERSION 1

static Py_ssize_t clamp(Py_ssize_t value, Py_ssize_t size) {
    return value < 0 ? 0 : value >= size ? size - 1 : value;
}

/* Add (sign +1) or remove (sign -1) the window column at padded column `column`. */
static void count_column(const uint8_t *cells, Py_ssize_t h, Py_ssize_t w, Py_ssize_t row,
                         Py_ssize_t column, int radius, int sign, int32_t *histogram,
                         int median, int32_t *below) {
    Py_ssize_t x = clamp(column - radius, w);
    for (int i = -radius; i <= radius; i++) {
        uint8_t value = cells[clamp(row + i, h) * w + x];
        histogram[value] += sign;
        if (value < median) *below += sign;
    }
}

static PyObject *window_medians(PyObject *self, PyObject *args) {
    PyObject *cells_object;
    int size;
    if (!PyArg_ParseTuple(args, "Oi", &cells_object, &size)) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(cells_object, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    PyObject *result = NULL;
    if (view.ndim != 2 || view.itemsize != 1 || size < 1 || size % 2 == 0) {
        PyErr_SetString(PyExc_ValueError, "window_medians needs a 2-D uint8 grid and an odd size");
        goto done;
    }
    Py_ssize_t h = view.shape[0], w = view.shape[1], kept = (w + 1) / 2;
    const uint8_t *cells = view.buf;
    int radius = size / 2;
    int32_t middle = size * size / 2;
    result = PyBytes_FromStringAndSize(NULL, h * kept);
    if (result == NULL) goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
    for (Py_ssize_t row = 0; row < h; row++) {
        int32_t histogram[256] = {0}, below = 0;
        int median = 0;
        for (Py_ssize_t column = 0; column < size; column++)
            count_column(cells, h, w, row, column, radius, 1, histogram, median, &below);
        for (Py_ssize_t c = 0; c < kept; c++) {
            if (c > 0) { /* the window moves two columns right */
                for (Py_ssize_t column = 2 * c - 2; column < 2 * c; column++)
                    count_column(cells, h, w, row, column, radius, -1, histogram, median, &below);
                for (Py_ssize_t column = 2 * c + size - 2; column < 2 * c + size; column++)
                    count_column(cells, h, w, row, column, radius, 1, histogram, median, &below);
            }
            /* the median: fewer than middle + 1 values below it, more with it */
            while (below > middle) below -= histogram[--median];
            while (below + histogram[median] <= middle) below += histogram[median++];
            out[row * kept + c] = (uint8_t)median;
        }
    }
done:
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"window_medians", window_medians, METH_VARARGS,
     "Medians of the size x size windows at every other cell of each row (edges repeated)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_paper",
                                    "Compiled part of the paper estimate (see quill.preprocess).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__paper(void) {
    PyObject *created = PyModule_Create(&module);
    if (created != NULL && PyModule_AddIntConstant(created, "ABI_VERSION", ABI_VERSION) < 0) {
        Py_DECREF(created);
        return NULL;
    }
    return created;
}
