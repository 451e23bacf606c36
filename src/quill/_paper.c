/*
 * The compiled part of the ink map: the paper estimate's window medians
 * (quill.preprocess.ink._local_median), the largest cost of a line's preprocessing in NumPy.
 *
 * window_medians(cells, size) reads an (h, w) uint8 grid with its edges repeated and returns,
 * as h * ceil(w / 2) bytes, the median of the size x size window centred on every other cell
 * of each row (columns 0, 2, 4, ...): exactly what NumPy's partition of the same windows
 * gives (tests/core/test_preprocess_compiled.py). Each row's window slides two columns at a
 * time over a histogram of its 256 grey levels, and the median moves from the last one by
 * the few levels the changed columns shift it.
 *
 * colour_distance(image, paper) reads two (h, w, 3) uint8 images, a colour line or page and
 * its paper estimate, and returns the squared Euclidean distance of every pixel from its
 * paper colour as h * w native int32 values, with the 50th and 99.5th percentiles of the
 * distance (the square root): exactly what NumPy's differences, squares, np.bincount and
 * quill.preprocess.ink._percentiles give, in one pass over the pixels and one over their counts
 * instead of a dozen array passes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#define ABI_VERSION 2

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
    Py_BEGIN_ALLOW_THREADS /* a line's or page's windows: let other threads run meanwhile */
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
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&view);
    return result;
}

/* The smallest value whose cumulative count reaches `needed` (NumPy's searchsorted, left). */
static Py_ssize_t reaching(const int64_t *cumulative, Py_ssize_t size, int64_t needed) {
    Py_ssize_t low = 0, high = size;
    while (low < high) {
        Py_ssize_t middle = low + (high - low) / 2;
        if (cumulative[middle] < needed) low = middle + 1; else high = middle;
    }
    return low;
}

/* The q-th percentile of the square roots of values counted in `cumulative`, interpolated
 * between the two order statistics around it as quill.preprocess.ink._percentiles does. */
static double root_percentile(const int64_t *cumulative, Py_ssize_t size, double q) {
    int64_t total = cumulative[size - 1];
    double position = q / 100.0 * (double)(total - 1);
    int64_t below = (int64_t)floor(position);
    int64_t second = below + 2 < total ? below + 2 : total;
    double lower = sqrt((double)reaching(cumulative, size, below + 1));
    double upper = sqrt((double)reaching(cumulative, size, second));
    return lower + (upper - lower) * (position - (double)below);
}

static PyObject *colour_distance(PyObject *self, PyObject *args) {
    PyObject *image_object, *paper_object;
    if (!PyArg_ParseTuple(args, "OO", &image_object, &paper_object)) return NULL;
    Py_buffer image, paper;
    if (PyObject_GetBuffer(image_object, &image, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (PyObject_GetBuffer(paper_object, &paper, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&image);
        return NULL;
    }
    PyObject *result = NULL, *squares = NULL;
    int64_t *cumulative = NULL;
    if (image.ndim != 3 || image.itemsize != 1 || image.shape[2] != 3 || paper.ndim != 3 ||
        paper.itemsize != 1 || paper.shape[0] != image.shape[0] ||
        paper.shape[1] != image.shape[1] || paper.shape[2] != 3 || image.len == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "colour_distance needs two non-empty (h, w, 3) uint8 images of one size");
        goto done;
    }
    Py_ssize_t pixels = image.shape[0] * image.shape[1];
    squares = PyBytes_FromStringAndSize(NULL, pixels * (Py_ssize_t)sizeof(int32_t));
    if (squares == NULL) goto done;
    int32_t *squared = (int32_t *)PyBytes_AS_STRING(squares);
    const uint8_t *a = image.buf, *b = paper.buf;
    double median = 0.0, high = 0.0;
    Py_BEGIN_ALLOW_THREADS /* a page's pixels: let other threads run meanwhile */
    int32_t largest = 0;
    for (Py_ssize_t i = 0; i < pixels; i++) {
        int32_t red = (int32_t)a[3 * i] - b[3 * i];
        int32_t green = (int32_t)a[3 * i + 1] - b[3 * i + 1];
        int32_t blue = (int32_t)a[3 * i + 2] - b[3 * i + 2];
        int32_t value = red * red + green * green + blue * blue;
        squared[i] = value;
        if (value > largest) largest = value;
    }
    Py_ssize_t size = (Py_ssize_t)largest + 1;
    cumulative = calloc((size_t)size, sizeof(int64_t));
    if (cumulative != NULL) {
        for (Py_ssize_t i = 0; i < pixels; i++) cumulative[squared[i]]++;
        for (Py_ssize_t i = 1; i < size; i++) cumulative[i] += cumulative[i - 1];
        median = root_percentile(cumulative, size, 50.0);
        high = root_percentile(cumulative, size, 99.5);
    }
    Py_END_ALLOW_THREADS
    if (cumulative == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    result = Py_BuildValue("Odd", squares, median, high);
done:
    free(cumulative);
    Py_XDECREF(squares);
    PyBuffer_Release(&image);
    PyBuffer_Release(&paper);
    return result;
}

static PyMethodDef methods[] = {
    {"colour_distance", colour_distance, METH_VARARGS,
     "Squared colour distances (int32) of two (h, w, 3) uint8 images, and the 50th and 99.5th "
     "percentiles of their square roots."},
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
