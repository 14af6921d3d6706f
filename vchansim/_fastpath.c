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
#include <sys/mman.h>
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

/* ---- addresses and fixed mappings ---------------------------------------------------- */

/* buffer_address(buffer): the address of a writable buffer's first byte, for the calls
 * here that take raw addresses.  The caller keeps the buffer (or a view of it) alive and
 * exported for as long as it uses the address. */
static PyObject *
fp_buffer_address(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_WRITABLE) < 0)
        return NULL;
    PyObject *address = PyLong_FromVoidPtr(view.buf);
    PyBuffer_Release(&view);
    return address;
}

/* map_fixed(address, length, prot, fd, offset): map length bytes of fd at offset, shared,
 * exactly at address (over a range the caller reserved); OSError on failure. */
static PyObject *
fp_map_fixed(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "map_fixed(address, length, prot, fd, offset)");
        return NULL;
    }
    void *address = address_arg(args[0]);
    if (address == NULL)
        return NULL;
    size_t length = PyLong_AsSize_t(args[1]);
    if (length == (size_t)-1 && PyErr_Occurred())
        return NULL;
    long prot = PyLong_AsLong(args[2]);
    if (prot == -1 && PyErr_Occurred())
        return NULL;
    int fd;
    if (fd_arg(args[3], &fd) < 0)
        return NULL;
    long long offset = PyLong_AsLongLong(args[4]);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    if (mmap(address, length, (int)prot, MAP_SHARED | MAP_FIXED, fd, (off_t)offset) == MAP_FAILED)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* ---- the shm event channel's system calls ------------------------------------------- */

/* Count one event in *counter (if not NULL) and write 1 to the eventfd; 0, or -1 with an
 * exception set. */
static int
kick(int fd, uint64_t *counter)
{
    if (counter != NULL)
        __atomic_fetch_add(counter, 1, __ATOMIC_SEQ_CST);
    uint64_t one = 1;
    while (write(fd, &one, sizeof one) < 0) {
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
    return 0;
}

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
    if (kick(fd, counter) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static double
monotonic(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + now.tv_nsec * 1e-9;
}

/* A deadline ``timeout`` seconds from now, or none (*forever) for None. */
static int
deadline_arg(PyObject *arg, int *forever, double *deadline)
{
    *forever = arg == Py_None;
    *deadline = 0;
    if (*forever)
        return 0;
    double timeout = PyFloat_AsDouble(arg);
    if (timeout == -1.0 && PyErr_Occurred())
        return -1;
    *deadline = monotonic() + (timeout > 0 ? timeout : 0);
    return 0;
}

/* epoll_wait for one event until the deadline, with the GIL released: 1 and the ready
 * descriptor in *fd, 0 on timeout, -1 with an exception set.  An interrupted wait runs
 * the signal handlers and resumes with the time left (PEP 475). */
static int
epoll_one(int epfd, int forever, double deadline, int *fd)
{
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
        if (got > 0) {
            *fd = event.data.fd;
            return 1;
        }
        if (got == 0)
            return 0;
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
}

/* wait_one(epfd, timeout): epoll_wait for one event for up to ``timeout`` seconds (None:
 * forever); return the ready descriptor, or -1 on timeout. */
static PyObject *
fp_wait_one(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "wait_one(epfd, timeout)");
        return NULL;
    }
    int epfd, forever, fd = -1;
    double deadline;
    if (fd_arg(args[0], &epfd) < 0 || deadline_arg(args[1], &forever, &deadline) < 0)
        return NULL;
    int got = epoll_one(epfd, forever, deadline, &fd);
    if (got < 0)
        return NULL;
    return PyLong_FromLong(got ? fd : -1);
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

/* Copy n bytes in and publish them if they all fit now: 1, or 0 having done nothing. */
static int
ring_copy_in(RingCore *self, const char *src, size_t n)
{
    uint32_t prod;
    uint32_t used = ring_used(self, NULL, &prod);
    uint32_t space = used <= self->size ? self->size - used : 0;
    if (n > space)
        return 0;
    /* The consumer's index was read before we overwrite the bytes it freed. */
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    uint32_t pos = prod & (self->size - 1);
    uint32_t first = self->size - pos;
    if (n <= first) {
        memcpy(self->bytes + pos, src, n);
    } else {
        memcpy(self->bytes + pos, src, first);
        memcpy(self->bytes, src + first, n - first);
    }
    __atomic_store_n(self->prod, prod + (uint32_t)n, __ATOMIC_RELEASE);
    return 1;
}

/* If at least ``need`` bytes are ready, move up to n of them out and free them; the count
 * (0 if fewer than ``need`` are there, or ``need`` is more than the ring holds). */
static uint32_t
ring_copy_out(RingCore *self, char *dst, size_t n, size_t need)
{
    uint32_t cons;
    uint32_t ready = ring_used(self, &cons, NULL);
    if (ready > self->size || need > ready || n == 0)
        return 0;
    /* The data is read only after the producer's index that published it. */
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    uint32_t count = n < ready ? (uint32_t)n : ready;
    uint32_t pos = cons & (self->size - 1);
    uint32_t first = self->size - pos;
    if (count <= first) {
        memcpy(dst, self->bytes + pos, count);
    } else {
        memcpy(dst, self->bytes + pos, first);
        memcpy(dst + first, self->bytes, count - first);
    }
    /* Our reads of the bytes complete before the producer may reuse them. */
    __atomic_store_n(self->cons, cons + count, __ATOMIC_RELEASE);
    return count;
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
    int done = ring_copy_in(self, src.buf, n);
    PyBuffer_Release(&src);
    return PyLong_FromSsize_t(done ? n : -1);
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
    uint32_t count = need < 0 ? 0 : ring_copy_out(self, dst.buf, (size_t)n, (size_t)need);
    PyBuffer_Release(&dst);
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
static inline void
request_bit(NotifyCore *self, unsigned char bit)
{
    if (__atomic_load_n(self->peer, __ATOMIC_RELAXED) & bit)
        __atomic_thread_fence(__ATOMIC_ACQUIRE);   /* order the caller's re-read after it */
    else
        __atomic_fetch_or(self->peer, bit, __ATOMIC_SEQ_CST);
}

static PyObject *
notify_request(NotifyCore *self, PyObject *arg)
{
    unsigned char bit;
    if (bit_arg(self, arg, &bit) < 0)
        return NULL;
    request_bit(self, bit);
    Py_RETURN_NONE;
}

static inline int
take_bit(NotifyCore *self, unsigned char bit)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (!(__atomic_load_n(self->own, __ATOMIC_RELAXED) & bit))
        return 0;
    unsigned char old = __atomic_fetch_and(self->own, (unsigned char)~bit, __ATOMIC_SEQ_CST);
    return old & bit;
}

/* take(bit): after a full fence (the index just published must be visible before the
 * bit is read), clear the peer's request for ``bit``; True if it had asked. */
static PyObject *
notify_take(NotifyCore *self, PyObject *arg)
{
    unsigned char bit;
    if (bit_arg(self, arg, &bit) < 0)
        return NULL;
    return PyBool_FromLong(take_bit(self, bit));
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

/* ---- Waiter: a vchan call that blocks, as one call ------------------------------------
 *
 * In Python one blocking step -- arm the notify bit, re-check the ring, announce the
 * sleep, wait, clear the announcement, look again -- is some eight calls, and a blocking
 * write of more than the ring holds takes several.  Each runs with its interpreter state
 * to bring back into caches that, with many endpoints sharing the CPUs, the others have
 * evicted since: that, not the kernel's part, is what made a Python end's CPU per GiB
 * grow with the number of pairs.  A Waiter does the whole call in C, sleeping with the
 * GIL released, and goes back to sleep after a wake-up that brought too little without
 * returning to Python.  The notify-bit protocol is the one every call here follows: the
 * bit is armed only when the ring falls short, and the peer kicked only when it asked. */

/* The notify bits (docs/protocol.md section 4.1) and what a waiter for each is asleep in
 * (vchansim/statspage.py's Blocked). */
#define NOTIFY_WRITE 0x1    /* "kick me when you write": a reader waiting for data */
#define NOTIFY_READ 0x2     /* "kick me when you read": a writer waiting for space */
#define BLOCKED_READ 1
#define BLOCKED_WRITE 2

static uint64_t
monotonic_us(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
}

typedef struct {
    PyObject_HEAD
    NotifyCore *notify;   /* a reference held */
    int epfd;             /* the epoll our port's incoming eventfd is in (edge-triggered) */
    int kick_fd;          /* the peer's eventfd */
    uint64_t *wait_word;  /* where we say we sleep, or NULL */
    uint64_t *sent;       /* where our events are counted, or NULL */
} Waiter;

static int
waiter_init(Waiter *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"notify", "epfd", "kick_fd", "wait_word", "sent_counter", NULL};
    PyObject *notify, *epfd, *kick_fd, *wait_word, *sent;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOOO", kwlist, &NotifyCoreType, &notify,
                                     &epfd, &kick_fd, &wait_word, &sent))
        return -1;
    if (fd_arg(epfd, &self->epfd) < 0 || fd_arg(kick_fd, &self->kick_fd) < 0)
        return -1;
    self->wait_word = PyLong_AsVoidPtr(wait_word);
    self->sent = PyLong_AsVoidPtr(sent);
    if (PyErr_Occurred())
        return -1;
    Py_XSETREF(self->notify, (NotifyCore *)Py_NewRef(notify));
    return 0;
}

static void
waiter_dealloc(Waiter *self)
{
    Py_CLEAR(self->notify);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The arguments every call shares: the ring, the buffer, its count n (None: all of it),
 * ``need``, the live offset (-1: not watched) and the timeout. */
typedef struct {
    RingCore *ring;
    Py_buffer buf;
    size_t n, need;
    const unsigned char *live;
    int forever;
    double deadline;
} Call;

/* A call's buffer and checked counts: ``n`` (None: all of buf), ``need``, the live offset
 * (-1: not watched); -1 with an exception set.  The caller sets the deadline. */
static int
call_init(Waiter *self, RingCore *ring, PyObject *buf, PyObject *n_arg, Py_ssize_t need,
          Py_ssize_t live, int writable, Call *call)
{
    call->ring = ring;
    if (self->notify == NULL) {
        PyErr_SetString(PyExc_ValueError, "this Waiter was never initialised");
        return -1;
    }
    if (ring_live(ring) < 0 || !self->notify->held)
        return ring->held ? closed_error() : -1;
    if (writable && ring->data.readonly) {
        PyErr_SetString(PyExc_TypeError, "this ring is mapped read-only: it cannot be written");
        return -1;
    }
    if (PyObject_GetBuffer(buf, &call->buf, writable ? PyBUF_SIMPLE : PyBUF_WRITABLE) < 0) {
        if (!writable && PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "reading needs a writable, contiguous buffer");
        }
        return -1;
    }
    Py_ssize_t n;
    if (count_arg(n_arg, call->buf.len, &n) < 0)
        goto fail;
    if (need < 1 || need > n || (size_t)need > ring->size) {
        PyErr_Format(PyExc_ValueError, "need=%zd is outside 1..min(n=%zd, ring size %u)", need,
                     n, (unsigned)ring->size);
        goto fail;
    }
    if (live < -1 || live >= self->notify->page.len) {
        PyErr_Format(PyExc_ValueError, "live offset %zd is outside the page", live);
        goto fail;
    }
    call->n = (size_t)n;
    call->need = (size_t)need;
    call->live = live >= 0 ? (unsigned char *)self->notify->page.buf + live : NULL;
    return 0;
fail:
    PyBuffer_Release(&call->buf);
    return -1;
}

/* The arguments of Waiter.read and Waiter.write: (ring, buffer, n, need, live, timeout). */
static int
call_args(Waiter *self, PyObject *const *args, Py_ssize_t nargs, int writable, Call *call)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "(ring, buffer, n, need, live, timeout)");
        return -1;
    }
    if (!PyObject_TypeCheck(args[0], &RingCoreType)) {
        PyErr_SetString(PyExc_TypeError, "the ring must be a RingCore");
        return -1;
    }
    Py_ssize_t need = PyLong_AsSsize_t(args[3]);
    if (need == -1 && PyErr_Occurred())
        return -1;
    Py_ssize_t live = PyLong_AsSsize_t(args[4]);
    if ((live == -1 && PyErr_Occurred()) ||
        deadline_arg(args[5], &call->forever, &call->deadline) < 0)
        return -1;
    return call_init(self, (RingCore *)args[0], args[1], args[2], need, live, writable, call);
}

/* Kick the peer if it asked for ``bit``; 0, or -1 with an OSError whose
 * characters_written says how many bytes the call moved. */
static int
kick_if_asked(Waiter *self, unsigned char bit, size_t moved)
{
    if (!take_bit(self->notify, bit) || kick(self->kick_fd, self->sent) == 0)
        return 0;
    PyObject *type, *value, *trace;
    PyErr_Fetch(&type, &value, &trace);
    PyErr_NormalizeException(&type, &value, &trace);
    PyObject *count = PyLong_FromSize_t(moved);
    if (count == NULL || PyObject_SetAttrString(value, "characters_written", count) < 0)
        PyErr_Clear();   /* the OSError itself still says what failed */
    Py_XDECREF(count);
    PyErr_Restore(type, value, trace);
    return -1;
}

/* Arm ``bit``, and unless the ring now holds ``want`` bytes of data (for_data) or space,
 * or the peer is closed, sleep for one event: 1 to look again, 0 on timeout or close, -1
 * with an exception set. */
static int
sleep_step(Waiter *self, Call *call, unsigned char bit, int for_data, size_t want)
{
    request_bit(self->notify, bit);
    uint32_t used = ring_used(call->ring, NULL, NULL);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (used <= call->ring->size && (for_data ? used : call->ring->size - used) >= want)
        return 1;
    if (call->live && __atomic_load_n(call->live, __ATOMIC_RELAXED) == 0)
        return 0;
    uint64_t blocked = for_data ? BLOCKED_READ : BLOCKED_WRITE;
    if (self->wait_word)
        __atomic_store_n(self->wait_word, monotonic_us() << 8 | blocked, __ATOMIC_RELAXED);
    int fd, got = epoll_one(self->epfd, call->forever, call->deadline, &fd);
    if (self->wait_word)
        __atomic_store_n(self->wait_word, 0, __ATOMIC_RELAXED);
    if (got > 0 && (!self->notify->held || !call->ring->held))
        return closed_error();   /* released by another thread while we slept */
    return got;
}

/* The loop of a read: once ``need`` bytes are ready move up to n of them out, kick the
 * peer if it asked; the count (0: closed or timed out) in *got, or -1 with an exception
 * set.  A wake-up that brought too little sleeps again. */
static int
waiter_get(Waiter *self, Call *call, uint32_t *got)
{
    int step = 1;
    while (!(*got = ring_copy_out(call->ring, call->buf.buf, call->n, call->need)) && step > 0)
        step = sleep_step(self, call, NOTIFY_WRITE, 1, call->need);
    if (step < 0 || (*got && kick_if_asked(self, NOTIFY_READ, *got) < 0))
        return -1;
    return 0;
}

/* The loop of a write: put the call's bytes in as room comes, ``need`` (or what is left)
 * at a time, kicking the peer whenever it asked; how many went in in *pos, 0 or -1 with
 * an exception set. */
static int
waiter_put(Waiter *self, Call *call, size_t *pos)
{
    int step = 1;
    *pos = 0;
    while (step > 0) {
        size_t left = call->n - *pos, want = left < call->need ? left : call->need;
        uint32_t used = ring_used(call->ring, NULL, NULL);
        size_t space = used <= call->ring->size ? call->ring->size - used : 0;
        size_t chunk = space < want ? 0 : (space < left ? space : left);
        if (chunk && ring_copy_in(call->ring, (const char *)call->buf.buf + *pos, chunk)) {
            *pos += chunk;
            if (kick_if_asked(self, NOTIFY_WRITE, *pos) < 0)
                return -1;
            if (*pos == call->n)
                return 0;
            continue;
        }
        step = sleep_step(self, call, NOTIFY_READ, 0, want);
    }
    return step < 0 ? -1 : 0;
}

/* read(ring, dst, n, need, live, timeout): once ``need`` bytes are ready, move up to n of
 * them (None: len(dst)) into dst, kick the peer if it asked, and return the count; 0 if
 * the peer closed or ``timeout`` seconds (None: forever) passed first.  A wake-up that
 * brought too little sleeps again without returning. */
static PyObject *
waiter_read(Waiter *self, PyObject *const *args, Py_ssize_t nargs)
{
    Call call;
    if (call_args(self, args, nargs, 0, &call) < 0)
        return NULL;
    uint32_t got;
    int done = waiter_get(self, &call, &got);
    PyBuffer_Release(&call.buf);
    return done < 0 ? NULL : PyLong_FromUnsignedLong(got);
}

/* write(ring, src, n, need, live, timeout): put the first n bytes of src (None: all) in as
 * room comes, at least ``need`` (or what is left, if less) at a time, kicking the peer
 * whenever it asked; return how many went in: n, or fewer if the peer closed or
 * ``timeout`` seconds (None: forever) passed first.  need = n makes it all or nothing. */
static PyObject *
waiter_write(Waiter *self, PyObject *const *args, Py_ssize_t nargs)
{
    Call call;
    if (call_args(self, args, nargs, 1, &call) < 0)
        return NULL;
    size_t pos;
    int done = waiter_put(self, &call, &pos);
    PyBuffer_Release(&call.buf);
    return done < 0 ? NULL : PyLong_FromSize_t(pos);
}

static PyMethodDef waiter_methods[] = {
    {"read", (PyCFunction)(void (*)(void))waiter_read, METH_FASTCALL,
     "read(ring, dst, n, need, live, timeout): wait for need bytes, move up to n; the count."},
    {"write", (PyCFunction)(void (*)(void))waiter_write, METH_FASTCALL,
     "write(ring, src, n, need, live, timeout): put n bytes as room comes; how many went in."},
    {NULL},
};

static PyTypeObject WaiterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vchansim._fastpath.Waiter",
    .tp_doc = PyDoc_STR("Waiter(notify, epfd, kick_fd, wait_word, sent_counter): blocking "
                        "reads and writes of one endpoint, each one call."),
    .tp_basicsize = sizeof(Waiter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)waiter_init,
    .tp_dealloc = (destructor)waiter_dealloc,
    .tp_methods = waiter_methods,
};

/* ---- ChannelCore: a vchan's stream read and write, entered without a Python frame ----
 *
 * The base of vchansim.channel.Vchan.  A blocking stream read_into() or write() with no
 * timeout and no spin -- what an application's data loop makes -- goes straight from the
 * caller into the Waiter: no interpreter frame of the library's runs between the
 * application and its sleep.  With many endpoints taking turns on few CPUs each frame is
 * memory to bring back into the caches after every wake-up, and that, growing with the
 * number of processes, was most of what a Python end's CPU per GiB had over a C one.
 * Every other case (non-blocking, a timeout, a spinning or persistent end, a closed peer,
 * a call that came back short) is the subclass's: _read_on() and _write_on(). */

typedef struct {
    PyObject_HEAD
    /* The subclass's attributes, kept here so the fast path reads them without lookups.
     * The first four are compared by identity: any value but the plain one (False, True,
     * None, False) means "not the fast path".  The Waiter and the rings are type-checked
     * when they are set, so the fast path need not: it runs only over this core's. */
    PyObject *closed, *blocking, *timeout, *persist;
    PyObject *waits, *rd, *wr;
    int ours;             /* waits, rd and wr are all this core's (not the Python one's) */
    Py_ssize_t live;      /* the peer's live byte's offset in the control page */
    double recheck;       /* the longest sleep before the peer's liveness is re-checked */
} ChannelCore;

static int
channel_traverse(ChannelCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->closed);
    Py_VISIT(self->blocking);
    Py_VISIT(self->timeout);
    Py_VISIT(self->persist);
    Py_VISIT(self->waits);
    Py_VISIT(self->rd);
    Py_VISIT(self->wr);
    return 0;
}

static int
channel_clear(ChannelCore *self)
{
    Py_CLEAR(self->closed);
    Py_CLEAR(self->blocking);
    Py_CLEAR(self->timeout);
    Py_CLEAR(self->persist);
    Py_CLEAR(self->waits);
    Py_CLEAR(self->rd);
    Py_CLEAR(self->wr);
    self->ours = 0;
    return 0;
}

static void
channel_dealloc(ChannelCore *self)
{
    PyObject_GC_UnTrack(self);
    channel_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The Waiter if a call on ``ring`` may run whole in the core, else NULL. */
static Waiter *
channel_fast(ChannelCore *self)
{
    if (!self->ours || self->closed != Py_False || self->blocking != Py_True ||
        self->timeout != Py_None || self->persist != Py_False || self->live < 0)
        return NULL;
    return (Waiter *)self->waits;
}

/* The core's OSError (a failed wait or kick) as the subclass's channel error, raised
 * from it; other exceptions pass unchanged. */
static PyObject *
channel_core_error(ChannelCore *self)
{
    if (!PyErr_ExceptionMatches(PyExc_OSError))
        return NULL;
    PyObject *type, *value, *trace;
    PyErr_Fetch(&type, &value, &trace);
    PyErr_NormalizeException(&type, &value, &trace);
    if (trace != NULL)
        PyException_SetTraceback(value, trace);
    Py_XDECREF(type);
    Py_XDECREF(trace);
    PyObject *err = PyObject_CallMethod((PyObject *)self, "_core_error", "Oi", value, 0);
    if (err == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    PyException_SetContext(err, Py_NewRef(value));
    PyException_SetCause(err, value);   /* steals value */
    PyErr_SetObject((PyObject *)Py_TYPE(err), err);
    Py_DECREF(err);
    return NULL;
}

/* A call's positional and keyword arguments by the names in ``names`` (NULL-ended), into
 * ``out`` (left as they are where not given); -1 with a TypeError. */
static int
fast_args(const char *func, const char *const *names, Py_ssize_t required,
          PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **out)
{
    Py_ssize_t count = 0;
    while (names[count] != NULL)
        count++;
    if (nargs > count) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd arguments (%zd given)", func,
                     count, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        out[i] = args[i];
    Py_ssize_t keywords = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < keywords; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = nargs;
        while (i < count && PyUnicode_CompareWithASCIIString(name, names[i]) != 0)
            i++;
        if (i == count) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", func,
                         name);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    for (Py_ssize_t i = 0; i < required; i++)
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", func,
                         names[i]);
            return -1;
        }
    return 0;
}

/* The names of the subclass's methods for what the core does not finish. */
static PyObject *name_read_on, *name_write_on;

/* Call the subclass's method ``name`` with two or three arguments (``c`` NULL: two). */
static PyObject *
hand_on(ChannelCore *self, PyObject *name, PyObject *a, PyObject *b, PyObject *c)
{
    PyObject *args[4] = {(PyObject *)self, a, b, c};
    return PyObject_VectorcallMethod(name, args, c == NULL ? 3 : 4, NULL);
}

/* Whether ``obj`` is true; one that cannot say (it raised) is left to the subclass,
 * which will raise it again. */
static int
truthy(PyObject *obj)
{
    int is = PyObject_IsTrue(obj);
    if (is < 0)
        PyErr_Clear();
    return is == 1;
}

/* Whether a read's count lets the core run: None, or an int other than 0. */
static int
count_for_core(PyObject *obj)
{
    if (obj == Py_None)
        return 1;
    if (!PyLong_CheckExact(obj))
        return 0;
    Py_ssize_t value = PyLong_AsSsize_t(obj);
    if (value == -1 && PyErr_Occurred())
        PyErr_Clear();   /* too large: the core refuses it as the subclass would */
    return value != 0;
}

/* Whether the peer's live byte reads open. */
static int
peer_live(Waiter *waiter, Py_ssize_t live)
{
    NotifyCore *notify = waiter->notify;
    return notify != NULL && notify->held && live < notify->page.len &&
           __atomic_load_n((unsigned char *)notify->page.buf + live, __ATOMIC_RELAXED);
}

/* One stream call in the core over ``ring``, need 1, sleeping until the liveness re-check
 * at most: how many bytes moved in *moved, of the *total asked; -1 with an exception set
 * (the core's OSError as the subclass's error).  The Waiter and the ring are held while
 * the call may sleep, as another thread may rebind the attributes meanwhile. */
static int
channel_run(ChannelCore *self, Waiter *waiter, PyObject *ring, PyObject *buf, PyObject *n,
            int writing, size_t *moved, size_t *total)
{
    Py_INCREF(waiter);
    Py_INCREF(ring);
    Call call;
    call.forever = 0;
    call.deadline = monotonic() + self->recheck;
    int done = call_init(waiter, (RingCore *)ring, buf, n, 1, self->live, writing, &call);
    if (done == 0) {
        uint32_t got = 0;
        done = writing ? waiter_put(waiter, &call, moved) : waiter_get(waiter, &call, &got);
        if (!writing)
            *moved = got;
        *total = call.n;
        PyBuffer_Release(&call.buf);
        if (done < 0)
            channel_core_error(self);
    }
    Py_DECREF(ring);
    Py_DECREF(waiter);
    return done;
}

static PyObject *
channel_read_into(ChannelCore *self, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames)
{
    static const char *const names[] = {"buf", "nbytes", NULL};
    PyObject *given[2] = {NULL, Py_None};
    if (fast_args("read_into", names, 1, args, nargs, kwnames, given) < 0)
        return NULL;
    PyObject *buf = given[0], *nbytes = given[1];
    Waiter *waiter = channel_fast(self);
    int waited = 0;
    if (waiter != NULL && truthy(buf) && count_for_core(nbytes)) {
        size_t got, asked;
        if (channel_run(self, waiter, self->rd, buf, nbytes, 0, &got, &asked) < 0)
            return NULL;
        if (got)
            return PyLong_FromSize_t(got);
        waited = 1;
    }
    return hand_on(self, name_read_on, buf, nbytes, waited ? Py_True : Py_False);
}

static PyObject *
channel_write(ChannelCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"data", NULL};
    PyObject *data = NULL;
    if (fast_args("write", names, 1, args, nargs, kwnames, &data) < 0)
        return NULL;
    Waiter *waiter = channel_fast(self);
    if (waiter != NULL && truthy(data) && peer_live(waiter, self->live)) {
        size_t pos, n;
        if (channel_run(self, waiter, self->wr, data, Py_None, 1, &pos, &n) < 0)
            return NULL;
        if (pos == n)
            return PyLong_FromSize_t(pos);
        PyObject *done_obj = PyLong_FromSize_t(pos);
        if (done_obj == NULL)
            return NULL;
        PyObject *result = hand_on(self, name_write_on, data, done_obj, NULL);
        Py_DECREF(done_obj);
        return result;
    }
    return hand_on(self, name_write_on, data, Py_None, NULL);
}

static PyMethodDef channel_methods[] = {
    {"read_into", (PyCFunction)(void (*)(void))channel_read_into,
     METH_FASTCALL | METH_KEYWORDS,
     "read_into(buf, nbytes=None): stream read into buf without allocating; returns the "
     "count (see read)."},
    {"write", (PyCFunction)(void (*)(void))channel_write, METH_FASTCALL | METH_KEYWORDS,
     "write(data): stream write.  Blocking: all of data (returns its length).  "
     "Non-blocking: as much as fits now (0..len).  Raises ChannelClosed if the peer is "
     "closed; if it closes part-way through a blocking write, the exception's written "
     "says how many bytes went into the ring."},
    {NULL},
};

/* The Waiter and the rings: any object (a channel over the Python core's runs the
 * subclass's path), None kept as NULL; whether all three are this core's is noted. */
static int
channel_set(ChannelCore *self, PyObject **slot, PyObject *value)
{
    Py_XSETREF(*slot, value == NULL || value == Py_None ? NULL : Py_NewRef(value));
    self->ours = self->waits != NULL && Py_IS_TYPE(self->waits, &WaiterType) &&
                 self->rd != NULL && PyObject_TypeCheck(self->rd, &RingCoreType) &&
                 self->wr != NULL && PyObject_TypeCheck(self->wr, &RingCoreType);
    return 0;
}

static PyObject *
channel_get(PyObject *value)
{
    return Py_NewRef(value != NULL ? value : Py_None);
}

static PyObject *
channel_get_waits(ChannelCore *self, void *closure)
{
    return channel_get(self->waits);
}

static int
channel_set_waits(ChannelCore *self, PyObject *value, void *closure)
{
    return channel_set(self, &self->waits, value);
}

static PyObject *
channel_get_rd(ChannelCore *self, void *closure)
{
    return channel_get(self->rd);
}

static int
channel_set_rd(ChannelCore *self, PyObject *value, void *closure)
{
    return channel_set(self, &self->rd, value);
}

static PyObject *
channel_get_wr(ChannelCore *self, void *closure)
{
    return channel_get(self->wr);
}

static int
channel_set_wr(ChannelCore *self, PyObject *value, void *closure)
{
    return channel_set(self, &self->wr, value);
}

static PyGetSetDef channel_getset[] = {
    {"_core_waits", (getter)channel_get_waits, (setter)channel_set_waits, NULL, NULL},
    {"_rd", (getter)channel_get_rd, (setter)channel_set_rd, NULL, NULL},
    {"_wr", (getter)channel_get_wr, (setter)channel_set_wr, NULL, NULL},
    {NULL},
};

static PyMemberDef channel_members[] = {
    {"_closed", T_OBJECT, offsetof(ChannelCore, closed), 0, NULL},
    {"blocking", T_OBJECT, offsetof(ChannelCore, blocking), 0, NULL},
    {"timeout", T_OBJECT, offsetof(ChannelCore, timeout), 0, NULL},
    {"server_persist", T_OBJECT, offsetof(ChannelCore, persist), 0, NULL},
    {"_live", T_PYSSIZET, offsetof(ChannelCore, live), 0, NULL},
    {"_recheck", T_DOUBLE, offsetof(ChannelCore, recheck), 0, NULL},
    {NULL},
};

static PyObject *
channel_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    ChannelCore *self = (ChannelCore *)PyType_GenericNew(type, args, kwds);
    if (self != NULL)
        self->live = -1;   /* not the fast path until the subclass sets it */
    return (PyObject *)self;
}

static PyTypeObject ChannelCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vchansim._fastpath.ChannelCore",
    .tp_doc = PyDoc_STR("ChannelCore(): the base of a vchan endpoint whose blocking stream "
                        "read_into and write run in the core."),
    .tp_basicsize = sizeof(ChannelCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = channel_new,
    .tp_traverse = (traverseproc)channel_traverse,
    .tp_clear = (inquiry)channel_clear,
    .tp_dealloc = (destructor)channel_dealloc,
    .tp_methods = channel_methods,
    .tp_members = channel_members,
    .tp_getset = channel_getset,
};

/* ---- the module ---------------------------------------------------------------------- */

static PyMethodDef module_methods[] = {
    {"full_fence", fp_full_fence, METH_NOARGS,
     "A sequentially consistent fence: no store passes a later load."},
    {"fetch_add_u64", (PyCFunction)(void (*)(void))fp_fetch_add_u64, METH_FASTCALL,
     "fetch_add_u64(address, amount): locked add to the u64 at address; the old value."},
    {"buffer_address", fp_buffer_address, METH_O,
     "buffer_address(buffer): the address of a writable buffer's first byte."},
    {"map_fixed", (PyCFunction)(void (*)(void))fp_map_fixed, METH_FASTCALL,
     "map_fixed(address, length, prot, fd, offset): mmap MAP_SHARED|MAP_FIXED at address."},
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
    if (PyType_Ready(&RingCoreType) < 0 || PyType_Ready(&NotifyCoreType) < 0 ||
        PyType_Ready(&WaiterType) < 0 || PyType_Ready(&ChannelCoreType) < 0)
        return NULL;
    name_read_on = PyUnicode_InternFromString("_read_on");
    name_write_on = PyUnicode_InternFromString("_write_on");
    if (name_read_on == NULL || name_write_on == NULL)
        return NULL;
    PyObject *module = PyModule_Create(&fastpath_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "RingCore", (PyObject *)&RingCoreType) < 0 ||
        PyModule_AddObjectRef(module, "NotifyCore", (PyObject *)&NotifyCoreType) < 0 ||
        PyModule_AddObjectRef(module, "Waiter", (PyObject *)&WaiterType) < 0 ||
        PyModule_AddObjectRef(module, "ChannelCore", (PyObject *)&ChannelCoreType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
