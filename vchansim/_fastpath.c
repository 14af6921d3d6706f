/*
 * vchansim._fastpath: the operations a vchan performs on every message, in C.
 *
 * In Python the cost of a small message is the interpreter, not the copy: a ring
 * transfer written with memoryview slices and ctypes fences takes about a microsecond
 * per call, where libxenvchan takes a tenth of that.  This module holds exactly the
 * per-message work -- the ring copy with its index arithmetic, the notify-bit protocol,
 * the sequentially consistent fences and locked read-modify-writes it needs, and the
 * eventfd/epoll system calls of the shm event channels -- so that a Python endpoint's
 * per-message cost approaches the C library's.  Everything else (setup, slow paths,
 * errors, policy) stays in Python; vchansim/ring.py and vchansim/atomics.py are the
 * documented face of what is here.
 *
 * Shared memory is written by a peer we do not trust: every shared index is loaded
 * exactly once per computation, and sizes come from what the local end was configured
 * with, never from the page (docs/protocol.md section 3).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------------ */

static int
closed_error(void)
{
    PyErr_SetString(PyExc_ValueError, "operation on released shared memory");
    return -1;
}

/* A raw address given by Python (from ctypes.addressof); 0 means "released". */
static void *
address_arg(PyObject *arg)
{
    void *address = PyLong_AsVoidPtr(arg);
    if (address == NULL && !PyErr_Occurred())
        closed_error();
    return address;
}

/* A file descriptor argument. */
static int
fd_arg(PyObject *arg, int *fd)
{
    long value = PyLong_AsLong(arg);
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (value < 0 || value > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%ld is not a file descriptor", value);
        return -1;
    }
    *fd = (int)value;
    return 0;
}

/* ---- fences and atomics on raw addresses --------------------------------------------- */

static PyObject *
fp_full_fence(PyObject *self, PyObject *unused)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

static PyObject *
fp_fetch_add_u64(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "fetch_add_u64(address, amount)");
        return NULL;
    }
    uint64_t *target = address_arg(args[0]);
    if (target == NULL)
        return NULL;
    unsigned long long amount = PyLong_AsUnsignedLongLong(args[1]);
    if (amount == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromUnsignedLongLong(__atomic_fetch_add(target, amount, __ATOMIC_SEQ_CST));
}

/* ---- the shm event channel's system calls ------------------------------------------- */

/* eventfd_kick(fd, counter_address): count one event (a locked add on the channel's
 * statistics page, skipped for address 0), then write 1 to the peer's eventfd. */
static PyObject *
fp_eventfd_kick(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "eventfd_kick(fd, counter_address)");
        return NULL;
    }
    int fd;
    if (fd_arg(args[0], &fd) < 0)
        return NULL;
    uint64_t *counter = PyLong_AsVoidPtr(args[1]);
    if (counter == NULL && PyErr_Occurred())
        return NULL;
    if (counter != NULL)
        __atomic_fetch_add(counter, 1, __ATOMIC_SEQ_CST);
    uint64_t one = 1;
    while (write(fd, &one, sizeof one) < 0) {
        if (errno != EINTR)
            return PyErr_SetFromErrno(PyExc_OSError);
        if (PyErr_CheckSignals() < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static double
monotonic(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + now.tv_nsec * 1e-9;
}

/* wait_one(epfd, timeout): epoll_wait for one event for up to ``timeout`` seconds (None:
 * forever), with the GIL released; return the ready descriptor, or -1 on timeout.  An
 * interrupted wait runs the signal handlers and resumes with the time left (PEP 475). */
static PyObject *
fp_wait_one(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "wait_one(epfd, timeout)");
        return NULL;
    }
    int epfd;
    if (fd_arg(args[0], &epfd) < 0)
        return NULL;
    double deadline = 0;
    int forever = args[1] == Py_None;
    if (!forever) {
        double timeout = PyFloat_AsDouble(args[1]);
        if (timeout == -1.0 && PyErr_Occurred())
            return NULL;
        deadline = monotonic() + (timeout > 0 ? timeout : 0);
    }
    for (;;) {
        int ms = -1;
        if (!forever) {
            double left = deadline - monotonic();
            ms = left <= 0 ? 0 : (int)(left * 1000.0 + 0.999);  /* round up, as select does */
        }
        struct epoll_event event;
        int got;
        Py_BEGIN_ALLOW_THREADS
        got = epoll_wait(epfd, &event, 1, ms);
        Py_END_ALLOW_THREADS
        if (got > 0)
            return PyLong_FromLong(event.data.fd);
        if (got == 0)
            return PyLong_FromLong(-1);
        if (errno != EINTR)
            return PyErr_SetFromErrno(PyExc_OSError);
        if (PyErr_CheckSignals() < 0)
            return NULL;
    }
}

/* ---- RingCore: one direction of a ring ---------------------------------------------- */

typedef struct {
    PyObject_HEAD
    Py_buffer control;   /* the control page, or any buffer holding the four u32 indices */
    Py_buffer data;      /* the ring's bytes */
    uint32_t *cons;
    uint32_t *prod;
    unsigned char *bytes;
    uint32_t size;       /* 2**order, from the local configuration */
    int order;
    int held;            /* both buffers are held */
} RingCore;

static int
ring_live(RingCore *self)
{
    return self->held ? 0 : closed_error();
}

static void
ring_release_buffers(RingCore *self)
{
    if (self->held) {
        PyBuffer_Release(&self->control);
        PyBuffer_Release(&self->data);
        self->held = 0;
    }
}

static int
ring_init(RingCore *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"indices", "cons_slot", "prod_slot", "buf", "order", NULL};
    PyObject *indices, *buf;
    int cons_slot, prod_slot, order;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OiiOi", kwlist, &indices, &cons_slot,
                                     &prod_slot, &buf, &order))
        return -1;
    ring_release_buffers(self);
    if (order < 10 || order > 31) {
        PyErr_Format(PyExc_ValueError, "ring order %d is outside 10..31", order);
        return -1;
    }
    if (cons_slot < 0 || cons_slot > 3 || prod_slot < 0 || prod_slot > 3) {
        PyErr_SetString(PyExc_ValueError, "index slots are 0..3");
        return -1;
    }
    if (PyObject_GetBuffer(indices, &self->control, PyBUF_WRITABLE) < 0)
        return -1;
    if (PyObject_GetBuffer(buf, &self->data, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&self->control);
        return -1;
    }
    self->held = 1;
    self->size = (uint32_t)1 << order;
    if (self->control.len < 16 || ((uintptr_t)self->control.buf & 3)) {
        ring_release_buffers(self);
        PyErr_SetString(PyExc_ValueError, "the indices need 16 bytes aligned to 4");
        return -1;
    }
    if ((size_t)self->data.len < self->size) {
        Py_ssize_t have = self->data.len;
        ring_release_buffers(self);
        PyErr_Format(PyExc_ValueError, "ring of order %d needs %u bytes, buffer has %zd",
                     order, (unsigned)((uint32_t)1 << order), have);
        return -1;
    }
    self->order = order;
    self->cons = (uint32_t *)self->control.buf + cons_slot;
    self->prod = (uint32_t *)self->control.buf + prod_slot;
    self->bytes = self->data.buf;
    return 0;
}

static void
ring_dealloc(RingCore *self)
{
    ring_release_buffers(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Bytes in flight, each index loaded once; more than size means the page is corrupt. */
static inline uint32_t
ring_used(RingCore *self, uint32_t *cons_out, uint32_t *prod_out)
{
    uint32_t prod = __atomic_load_n(self->prod, __ATOMIC_RELAXED);
    uint32_t cons = __atomic_load_n(self->cons, __ATOMIC_RELAXED);
    if (cons_out)
        *cons_out = cons;
    if (prod_out)
        *prod_out = prod;
    return prod - cons;
}

static PyObject *
ring_fill(RingCore *self, PyObject *unused)
{
    if (ring_live(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(ring_used(self, NULL, NULL));
}

static PyObject *
ring_data_ready(RingCore *self, PyObject *unused)
{
    if (ring_live(self) < 0)
        return NULL;
    uint32_t used = ring_used(self, NULL, NULL);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return PyLong_FromUnsignedLong(used <= self->size ? used : 0);
}

static PyObject *
ring_buffer_space(RingCore *self, PyObject *unused)
{
    if (ring_live(self) < 0)
        return NULL;
    uint32_t used = ring_used(self, NULL, NULL);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return PyLong_FromUnsignedLong(used <= self->size ? self->size - used : 0);
}

/* The byte count of a call: ``arg`` if it is not None (else the whole buffer), checked
 * against the buffer's length. */
static int
count_arg(PyObject *arg, Py_ssize_t len, Py_ssize_t *n)
{
    if (arg == Py_None) {
        *n = len;
        return 0;
    }
    *n = PyLong_AsSsize_t(arg);
    if (*n == -1 && PyErr_Occurred())
        return -1;
    if (*n < 0 || *n > len) {
        PyErr_Format(PyExc_ValueError, "nbytes=%zd does not fit a %zd-byte buffer", *n, len);
        return -1;
    }
    return 0;
}

/* put(src, n=None): copy the first n bytes of src (None: all) in and publish them if they
 * all fit now; return n, or -1 (nothing done) if they do not fit. */
static PyObject *
ring_put(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "put(src, n=None)");
        return NULL;
    }
    if (ring_live(self) < 0)
        return NULL;
    if (self->data.readonly) {
        PyErr_SetString(PyExc_TypeError, "this ring is mapped read-only: it cannot be written");
        return NULL;
    }
    Py_buffer src;
    if (PyObject_GetBuffer(args[0], &src, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t n = src.len;
    if (nargs == 2 && count_arg(args[1], src.len, &n) < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    uint32_t prod;
    uint32_t used = ring_used(self, NULL, &prod);
    uint32_t space = used <= self->size ? self->size - used : 0;
    if ((size_t)n > space) {
        PyBuffer_Release(&src);
        return PyLong_FromLong(-1);
    }
    /* The consumer's index was read before we overwrite the bytes it freed. */
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    uint32_t pos = prod & (self->size - 1);
    uint32_t first = self->size - pos;
    if ((size_t)n <= first) {
        memcpy(self->bytes + pos, src.buf, n);
    } else {
        memcpy(self->bytes + pos, src.buf, first);
        memcpy(self->bytes, (char *)src.buf + first, n - first);
    }
    PyBuffer_Release(&src);
    __atomic_store_n(self->prod, prod + (uint32_t)n, __ATOMIC_RELEASE);
    return PyLong_FromSsize_t(n);
}

/* get(dst, n=None, need=1): if at least ``need`` bytes are ready (None: all n), move up
 * to n (None: len(dst)) of them into dst and free them; return how many (0 if fewer than
 * ``need`` are there, or if ``need`` is more than the ring holds). */
static PyObject *
ring_get(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "get(dst, n=None, need=1)");
        return NULL;
    }
    if (ring_live(self) < 0)
        return NULL;
    Py_buffer dst;
    if (PyObject_GetBuffer(args[0], &dst, PyBUF_WRITABLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "reading needs a writable, contiguous buffer");
        }
        return NULL;
    }
    Py_ssize_t n = dst.len, need = 1;
    if (nargs >= 2 && count_arg(args[1], dst.len, &n) < 0)
        goto fail;
    if (nargs == 3) {
        need = args[2] == Py_None ? n : PyLong_AsSsize_t(args[2]);
        if (need == -1 && PyErr_Occurred())
            goto fail;
    }
    uint32_t cons;
    uint32_t ready = ring_used(self, &cons, NULL);
    if (ready > self->size || (size_t)need > ready || n == 0) {
        PyBuffer_Release(&dst);
        return PyLong_FromLong(0);
    }
    /* The data is read only after the producer's index that published it. */
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    uint32_t count = (size_t)n < ready ? (uint32_t)n : ready;
    uint32_t pos = cons & (self->size - 1);
    uint32_t first = self->size - pos;
    if (count <= first) {
        memcpy(dst.buf, self->bytes + pos, count);
    } else {
        memcpy(dst.buf, self->bytes + pos, first);
        memcpy((char *)dst.buf + first, self->bytes, count - first);
    }
    PyBuffer_Release(&dst);
    /* Our reads of the bytes complete before the producer may reuse them. */
    __atomic_store_n(self->cons, cons + count, __ATOMIC_RELEASE);
    return PyLong_FromUnsignedLong(count);
fail:
    PyBuffer_Release(&dst);
    return NULL;
}

static PyObject *
ring_release(RingCore *self, PyObject *unused)
{
    ring_release_buffers(self);
    Py_RETURN_NONE;
}

static PyObject *
ring_get_cons(RingCore *self, void *closure)
{
    if (ring_live(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(__atomic_load_n(self->cons, __ATOMIC_RELAXED));
}

static PyObject *
ring_get_prod(RingCore *self, void *closure)
{
    if (ring_live(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(__atomic_load_n(self->prod, __ATOMIC_RELAXED));
}

static PyObject *
ring_get_size(RingCore *self, void *closure)
{
    return PyLong_FromUnsignedLong(self->size);
}

static PyObject *
ring_get_order(RingCore *self, void *closure)
{
    return PyLong_FromLong(self->order);
}

static PyMethodDef ring_methods[] = {
    {"put", (PyCFunction)(void (*)(void))ring_put, METH_FASTCALL,
     "put(src, n=None): copy n bytes in and publish them if they fit now; n, or -1."},
    {"get", (PyCFunction)(void (*)(void))ring_get, METH_FASTCALL,
     "get(dst, n=None, need=1): move up to n bytes out if need are ready; the count."},
    {"fill", (PyCFunction)ring_fill, METH_NOARGS,
     "Bytes in flight as the page says, unsanitised (may exceed size if corrupt)."},
    {"data_ready", (PyCFunction)ring_data_ready, METH_NOARGS,
     "Bytes the consumer may read now; 0 if the indices are inconsistent."},
    {"buffer_space", (PyCFunction)ring_buffer_space, METH_NOARGS,
     "Bytes the producer may write now; 0 if the indices are inconsistent."},
    {"release", (PyCFunction)ring_release, METH_NOARGS,
     "Let go of the shared memory; later calls raise ValueError."},
    {NULL},
};

static PyGetSetDef ring_getset[] = {
    {"cons", (getter)ring_get_cons, NULL, "the consumer index, as the page holds it", NULL},
    {"prod", (getter)ring_get_prod, NULL, "the producer index, as the page holds it", NULL},
    {"size", (getter)ring_get_size, NULL, "the ring's size in bytes (2**order)", NULL},
    {"order", (getter)ring_get_order, NULL, "the ring's order", NULL},
    {NULL},
};

static PyTypeObject RingCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vchansim._fastpath.RingCore",
    .tp_doc = PyDoc_STR("RingCore(indices, cons_slot, prod_slot, buf, order): one direction "
                        "of a vchan ring over shared memory."),
    .tp_basicsize = sizeof(RingCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ring_init,
    .tp_dealloc = (destructor)ring_dealloc,
    .tp_methods = ring_methods,
    .tp_getset = ring_getset,
};

/* ---- NotifyCore: the notify bytes as one endpoint uses them ---------------------------- */

typedef struct {
    PyObject_HEAD
    Py_buffer page;
    unsigned char *own;    /* the byte the peer sets and we clear (its requests of us) */
    unsigned char *peer;   /* the byte we set and the peer clears (our requests of it) */
    int held;
} NotifyCore;

static int
notify_init(NotifyCore *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"page", "own", "peer", NULL};
    PyObject *page;
    Py_ssize_t own, peer;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Onn", kwlist, &page, &own, &peer))
        return -1;
    if (self->held) {
        PyBuffer_Release(&self->page);
        self->held = 0;
    }
    if (PyObject_GetBuffer(page, &self->page, PyBUF_WRITABLE) < 0)
        return -1;
    if (own < 0 || peer < 0 || own >= self->page.len || peer >= self->page.len) {
        PyBuffer_Release(&self->page);
        PyErr_Format(PyExc_ValueError, "notify offsets %zd, %zd are outside the page", own, peer);
        return -1;
    }
    self->held = 1;
    self->own = (unsigned char *)self->page.buf + own;
    self->peer = (unsigned char *)self->page.buf + peer;
    return 0;
}

static void
notify_dealloc(NotifyCore *self)
{
    if (self->held)
        PyBuffer_Release(&self->page);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
bit_arg(NotifyCore *self, PyObject *arg, unsigned char *bit)
{
    if (!self->held)
        return closed_error();
    long value = PyLong_AsLong(arg);
    if (value == -1 && PyErr_Occurred())
        return -1;
    *bit = (unsigned char)value;
    return 0;
}

/* request(bit): ask the peer for an event when it next does ``bit``.  The locked OR is
 * skipped when the bit is still set from an earlier request: each byte has one setter
 * and one clearer, so a set bit stays set until the peer clears it. */
static PyObject *
notify_request(NotifyCore *self, PyObject *arg)
{
    unsigned char bit;
    if (bit_arg(self, arg, &bit) < 0)
        return NULL;
    if (__atomic_load_n(self->peer, __ATOMIC_RELAXED) & bit)
        __atomic_thread_fence(__ATOMIC_ACQUIRE);   /* order the caller's re-read after it */
    else
        __atomic_fetch_or(self->peer, bit, __ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

/* take(bit): after a full fence (the index just published must be visible before the
 * bit is read), clear the peer's request for ``bit``; True if it had asked. */
static PyObject *
notify_take(NotifyCore *self, PyObject *arg)
{
    unsigned char bit;
    if (bit_arg(self, arg, &bit) < 0)
        return NULL;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (!(__atomic_load_n(self->own, __ATOMIC_RELAXED) & bit))
        Py_RETURN_FALSE;
    unsigned char old = __atomic_fetch_and(self->own, (unsigned char)~bit, __ATOMIC_SEQ_CST);
    return PyBool_FromLong(old & bit);
}

static PyObject *
notify_release(NotifyCore *self, PyObject *unused)
{
    if (self->held) {
        PyBuffer_Release(&self->page);
        self->held = 0;
    }
    Py_RETURN_NONE;
}

static PyMethodDef notify_methods[] = {
    {"request", (PyCFunction)notify_request, METH_O,
     "request(bit): ask the peer for an event when it next does bit."},
    {"take", (PyCFunction)notify_take, METH_O,
     "take(bit): clear the peer's request for bit; True if it had asked (kick it)."},
    {"release", (PyCFunction)notify_release, METH_NOARGS,
     "Let go of the page; later calls raise ValueError."},
    {NULL},
};

static PyTypeObject NotifyCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vchansim._fastpath.NotifyCore",
    .tp_doc = PyDoc_STR("NotifyCore(page, own, peer): the notify bytes at offsets own "
                        "(set by the peer) and peer (set by us)."),
    .tp_basicsize = sizeof(NotifyCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)notify_init,
    .tp_dealloc = (destructor)notify_dealloc,
    .tp_methods = notify_methods,
};

/* ---- the module ---------------------------------------------------------------------- */

static PyMethodDef module_methods[] = {
    {"full_fence", fp_full_fence, METH_NOARGS,
     "A sequentially consistent fence: no store passes a later load."},
    {"fetch_add_u64", (PyCFunction)(void (*)(void))fp_fetch_add_u64, METH_FASTCALL,
     "fetch_add_u64(address, amount): locked add to the u64 at address; the old value."},
    {"eventfd_kick", (PyCFunction)(void (*)(void))fp_eventfd_kick, METH_FASTCALL,
     "eventfd_kick(fd, counter_address): count one event (0: no counter), write 1 to eventfd fd."},
    {"wait_one", (PyCFunction)(void (*)(void))fp_wait_one, METH_FASTCALL,
     "wait_one(epfd, timeout): the next ready descriptor of epoll epfd, or -1 on timeout."},
    {NULL},
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "vchansim._fastpath",
    .m_doc = "The per-message operations of a vchan (ring copies, notify bits, fences, "
             "event-channel system calls), in C.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    if (PyType_Ready(&RingCoreType) < 0 || PyType_Ready(&NotifyCoreType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&fastpath_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "RingCore", (PyObject *)&RingCoreType) < 0 ||
        PyModule_AddObjectRef(module, "NotifyCore", (PyObject *)&NotifyCoreType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
