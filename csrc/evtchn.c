/*
 * Drop-in libxenevtchn.so.1 for vchansim: event channels served by the hub instead of
 * /dev/xen/evtchn.
 *
 * The hub gives every bound port a pair of eventfds: the incoming one (the peer writes
 * it) and the outgoing one (the peer's incoming).  A handle watches its incoming
 * eventfds through one epoll descriptor, which is what xenevtchn_fd() returns, so it
 * polls readable exactly when a port is pending.  Each port is registered EPOLLONESHOT:
 * delivering it to xenevtchn_pending() masks it atomically, as Xen masks a port when
 * it fires, and xenevtchn_unmask() re-arms it; an event that arrived meanwhile keeps
 * the eventfd's counter non-zero and so fires again at once.
 *
 * Each channel also has a statistics page (two u64 counters, one per side): a notify
 * adds one to this end's counter before ringing, so observers see event counts for both
 * directions without being on the path.  The page's wait words (one per side) say that
 * an end sleeps in a blocking xenevtchn_pending() and since when, which is how an
 * observer tells a C end waiting for its peer from one busy elsewhere;
 * VCHANSIM_WAIT_STATE=off leaves them alone.
 */
#define _GNU_SOURCE
#include "hubclient.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#if __has_include(<xenevtchn.h>)
#include <xenevtchn.h> /* lets the compiler check every prototype below against Xen's */
#else
struct xentoollog_logger;
typedef struct xenevtchn_handle xenevtchn_handle;
typedef int xenevtchn_port_or_error_t;
typedef uint32_t evtchn_port_t;
typedef uint16_t domid_t;
#define XENEVTCHN_NO_CLOEXEC (1 << 0)
#endif

/* Xen's first reserved domain id: xenevtchn_restrict refuses it and above. */
#define VS_DOMID_FIRST_RESERVED 0x7FF0u

/* The statistics page: u64 events sent by side 0, then by side 1, then the wait word of
 * side 0, then that of side 1 (low byte: what the end sleeps in; the rest: CLOCK_MONOTONIC
 * microseconds when it began; docs/hub-protocol.md). */
#define VS_STATS_SIZE 4096
#define VS_FIRST_WAIT_WORD 2
/* The wait word's kind for "asleep waiting for an event": libxenvchan does not tell
 * the library whether it reads or writes, so observers learn that from its notify bits. */
#define VS_BLOCKED_EVENT 3u

struct vs_port {
    uint32_t port;
    int in_fd;          /* readable while the peer has notified us */
    int out_fd;         /* writing 1 notifies the peer */
    uint64_t *sent;     /* this end's counter in the statistics page */
    uint64_t *wait;     /* this end's wait word in the statistics page */
    void *stats;        /* the mapped statistics page */
};

static void release_port(struct vs_port *p)
{
    close(p->in_fd);
    close(p->out_fd);
    munmap(p->stats, VS_STATS_SIZE);
}

struct xenevtchn_handle {
    struct vs_hub hub; /* hub.lock also guards the port table and the restriction */
    int epfd;
    struct vs_port *ports;
    size_t nports;
    size_t cap;
    int restricted;
    uint32_t restrict_domid;
    int say_waits; /* write the wait words (VCHANSIM_WAIT_STATE is not "off") */
    pid_t opener;  /* a forked child's close leaves the ports bound, as the device's does */
};

/* Load-time set-up, so that libxenvchan's first xs_open() already reaches the emulator. */
__attribute__((constructor)) static void vs_evtchn_loaded(void)
{
    vs_prepare_environment();
}

static struct vs_port *find_port(xenevtchn_handle *xce, uint32_t port)
{
    for (size_t i = 0; i < xce->nports; i++)
        if (xce->ports[i].port == port)
            return &xce->ports[i];
    return NULL;
}

/* VCHANSIM_WAIT_STATE: "on" (or unset) or "off"; anything else is refused in one line. */
static int wait_words_setting(int *on)
{
    const char *text = getenv("VCHANSIM_WAIT_STATE");

    if (!text || strcmp(text, "on") == 0 || strcmp(text, "off") == 0) {
        *on = !text || strcmp(text, "on") == 0;
        return 0;
    }
    vs_log("xenevtchn_open", "VCHANSIM_WAIT_STATE must be 'on' or 'off', not '%s'", text);
    errno = EINVAL;
    return -1;
}

xenevtchn_handle *xenevtchn_open(struct xentoollog_logger *logger, unsigned int flags)
{
    int cloexec = !(flags & XENEVTCHN_NO_CLOEXEC);
    xenevtchn_handle *xce = calloc(1, sizeof(*xce));
    int err;

    (void)logger;
    if (!xce) {
        errno = ENOMEM;
        return NULL;
    }
    if (wait_words_setting(&xce->say_waits) < 0 ||
        vs_hub_open(&xce->hub, "xenevtchn_open", cloexec) < 0)
        goto fail;
    xce->opener = getpid();
    xce->epfd = epoll_create1(cloexec ? EPOLL_CLOEXEC : 0);
    if (xce->epfd >= 0)
        return xce;
    vs_hub_close(&xce->hub);
fail:
    err = errno;
    free(xce);
    errno = err;
    return NULL;
}

xenevtchn_handle *xenevtchn_fdopen(struct xentoollog_logger *logger, int fd,
                                   unsigned open_flags)
{
    (void)logger;
    (void)fd;
    (void)open_flags;
    errno = EOPNOTSUPP;
    return NULL;
}

/*
 * Closing unbinds every port, as closing the device does -- before returning, so that a
 * status asked on another connection right after sees them closed (the hub would also
 * unbind them when it notices the connection gone, but later).  A forked child's close
 * only drops its copies: the device stays open in the parent, and so do its ports.
 */
int xenevtchn_close(xenevtchn_handle *xce)
{
    if (!xce)
        return 0;
    for (size_t i = 0; i < xce->nports; i++) {
        release_port(&xce->ports[i]);
        if (!xce->hub.lost && xce->opener == getpid())
            vs_hub_call(&xce->hub, "xenevtchn_close", VS_EVT_UNBIND, &xce->ports[i].port, 1,
                        NULL);
    }
    free(xce->ports);
    close(xce->epfd);
    vs_hub_close(&xce->hub);
    free(xce);
    return 0;
}

int xenevtchn_fd(xenevtchn_handle *xce)
{
    return xce->epfd;
}

static int arm(xenevtchn_handle *xce, const struct vs_port *p, int op)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.u32 = p->port};

    return epoll_ctl(xce->epfd, op, p->in_fd, &ev);
}

/* Add a port the hub just bound (reply: port, side; fds: incoming, outgoing, statistics
 * page) to the handle.  The statistics descriptor is consumed (mapped, then closed). */
static int adopt_port(xenevtchn_handle *xce, uint32_t port, uint32_t side, const int fds[3])
{
    struct vs_port p = {.port = port, .in_fd = fds[0], .out_fd = fds[1]};

    if (side > 1) {
        errno = EPROTO;
        return -1;
    }

    if (xce->nports == xce->cap) {
        size_t cap = xce->cap ? 2 * xce->cap : 4;
        struct vs_port *ports = realloc(xce->ports, cap * sizeof(*ports));

        if (!ports) {
            errno = ENOMEM;
            return -1;
        }
        xce->ports = ports;
        xce->cap = cap;
    }
    p.stats = mmap(NULL, VS_STATS_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fds[2], 0);
    if (p.stats == MAP_FAILED)
        return -1;
    p.sent = (uint64_t *)p.stats + side;
    p.wait = (uint64_t *)p.stats + VS_FIRST_WAIT_WORD + side;
    /* pending() drains the counter and must never block on a spurious wakeup. */
    if (fcntl(p.in_fd, F_SETFL, fcntl(p.in_fd, F_GETFL) | O_NONBLOCK) < 0 ||
        arm(xce, &p, EPOLL_CTL_ADD) < 0) {
        munmap(p.stats, VS_STATS_SIZE);
        return -1;
    }
    xce->ports[xce->nports++] = p;
    close(fds[2]);
    return 0;
}

static xenevtchn_port_or_error_t bind_port(xenevtchn_handle *xce, const char *what, uint32_t op,
                                           const uint32_t *args, size_t nargs)
{
    unsigned char buf[8];
    int fds[3];
    struct vs_reply reply = {.buf = buf, .cap = sizeof(buf), .fds = fds, .max_fds = 3};
    uint32_t port;

    if (vs_hub_call(&xce->hub, what, op, args, nargs, &reply) < 0)
        return -1;
    if (vs_reply_words(&reply) != 2 || reply.nfds != 3) {
        vs_close_fds(fds, reply.nfds);
        errno = EPROTO;
        return -1;
    }
    port = vs_reply_word(&reply, 0);
    if (adopt_port(xce, port, vs_reply_word(&reply, 1), fds) < 0) {
        int err = errno;

        vs_close_fds(fds, 3);
        vs_hub_call(&xce->hub, what, VS_EVT_UNBIND, &port, 1, NULL);
        errno = err;
        return -1;
    }
    return (xenevtchn_port_or_error_t)port;
}

xenevtchn_port_or_error_t xenevtchn_bind_unbound_port(xenevtchn_handle *xce, uint32_t domid)
{
    xenevtchn_port_or_error_t port = -1;

    pthread_mutex_lock(&xce->hub.lock);
    /* A restricted handle may only connect to its domain's existing ports (as Linux). */
    if (xce->restricted)
        errno = EACCES;
    else
        port = bind_port(xce, "xenevtchn_bind_unbound_port", VS_EVT_BIND_UNBOUND, &domid, 1);
    pthread_mutex_unlock(&xce->hub.lock);
    return port;
}

xenevtchn_port_or_error_t xenevtchn_bind_interdomain(xenevtchn_handle *xce, uint32_t domid,
                                                     evtchn_port_t remote_port)
{
    uint32_t args[2] = {domid, remote_port};
    xenevtchn_port_or_error_t port = -1;

    pthread_mutex_lock(&xce->hub.lock);
    if (xce->restricted && xce->restrict_domid != domid)
        errno = EACCES;
    else
        port = bind_port(xce, "xenevtchn_bind_interdomain", VS_EVT_BIND_INTERDOMAIN, args, 2);
    pthread_mutex_unlock(&xce->hub.lock);
    return port;
}

xenevtchn_port_or_error_t xenevtchn_bind_virq(xenevtchn_handle *xce, unsigned int virq)
{
    (void)xce;
    (void)virq;
    errno = EOPNOTSUPP;
    return -1;
}

int xenevtchn_unbind(xenevtchn_handle *xce, evtchn_port_t port)
{
    struct vs_port *p;
    int rc = 0;

    pthread_mutex_lock(&xce->hub.lock);
    p = find_port(xce, port);
    if (!p) {
        errno = ENOTCONN;
        rc = -1;
    } else {
        epoll_ctl(xce->epfd, EPOLL_CTL_DEL, p->in_fd, NULL);
        release_port(p);
        *p = xce->ports[--xce->nports];
        /* As in gnttab: a vanished hub has nothing left to unbind. */
        if (vs_hub_call(&xce->hub, "xenevtchn_unbind", VS_EVT_UNBIND, &port, 1, NULL) < 0 &&
            !xce->hub.lost)
            rc = -1;
    }
    pthread_mutex_unlock(&xce->hub.lock);
    return rc;
}

int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port)
{
    static const uint64_t one = 1;
    struct vs_port *p;
    int rc = 0;

    pthread_mutex_lock(&xce->hub.lock);
    p = find_port(xce, port);
    if (!p) {
        errno = ENOTCONN;
        rc = -1;
    } else {
        __atomic_fetch_add(p->sent, 1, __ATOMIC_SEQ_CST);
        if (write(p->out_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
            rc = -1; /* EAGAIN: the counter is saturated, so the event is already pending */
    }
    pthread_mutex_unlock(&xce->hub.lock);
    return rc;
}

/* Set the wait word of every port of the handle: the sleep is on all of them at once. */
static void say_waiting(xenevtchn_handle *xce, uint64_t word)
{
    pthread_mutex_lock(&xce->hub.lock);
    for (size_t i = 0; i < xce->nports; i++)
        __atomic_store_n(xce->ports[i].wait, word, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&xce->hub.lock);
}

static xenevtchn_port_or_error_t next_pending(xenevtchn_handle *xce, int timeout);

xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *xce)
{
    /* The device read blocks unless the caller made the descriptor non-blocking. */
    int flags = fcntl(xce->epfd, F_GETFL);
    int timeout = flags >= 0 && (flags & O_NONBLOCK) ? 0 : -1;
    struct timespec now;
    xenevtchn_port_or_error_t port;
    int err;

    if (timeout == 0 || !xce->say_waits || clock_gettime(CLOCK_MONOTONIC, &now) < 0)
        return next_pending(xce, timeout);
    say_waiting(xce, ((uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u) << 8 |
                         VS_BLOCKED_EVENT);
    port = next_pending(xce, timeout);
    err = errno;
    say_waiting(xce, 0);
    errno = err;
    return port;
}

/* Wait for (timeout -1) or look for (0) a fired port; drain and return it. */
static xenevtchn_port_or_error_t next_pending(xenevtchn_handle *xce, int timeout)
{
    struct epoll_event ev;

    for (;;) {
        int n = epoll_wait(xce->epfd, &ev, 1, timeout);
        struct vs_port *p;
        uint64_t count;

        if (n < 0)
            return -1;
        if (n == 0) {
            errno = EAGAIN;
            return -1;
        }
        pthread_mutex_lock(&xce->hub.lock);
        p = find_port(xce, ev.data.u32);
        if (p && read(p->in_fd, &count, sizeof(count)) < 0)
            count = 0; /* already drained: the port still fired, so report it */
        pthread_mutex_unlock(&xce->hub.lock);
        if (p)
            return (xenevtchn_port_or_error_t)ev.data.u32;
        /* Unbound by another thread after firing: look again. */
    }
}

int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port)
{
    struct vs_port *p;
    int rc = 0;

    pthread_mutex_lock(&xce->hub.lock);
    p = find_port(xce, port);
    /* Like a write of a foreign port number to the device, an unknown port is ignored. */
    if (p)
        rc = arm(xce, p, EPOLL_CTL_MOD);
    pthread_mutex_unlock(&xce->hub.lock);
    return rc;
}

int xenevtchn_restrict(xenevtchn_handle *xce, domid_t domid)
{
    int rc = -1;

    pthread_mutex_lock(&xce->hub.lock);
    if (xce->restricted)
        errno = EACCES;
    else if (domid == 0 || domid >= VS_DOMID_FIRST_RESERVED)
        errno = EINVAL;
    else {
        xce->restricted = 1;
        xce->restrict_domid = domid;
        rc = 0;
    }
    pthread_mutex_unlock(&xce->hub.lock);
    return rc;
}
