/*
 * Drop-in libxenctrl.so.4.17 for vchansim: the part of Xen's control library that vchan
 * programs use -- opening the interface, asking whether a domain exists, and an event
 * channel's status -- answered from the emulated XenStore and the hub instead of
 * hypercalls through /dev/xen/privcmd.  (The xc_evtchn_* compatibility calls are in
 * xenctrl-compat.c.)
 *
 * On the emulator a domain exists when it has a home in the XenStore,
 * /local/domain/<id>: `vchansim domain create` writes it as libxl does, or the hub does
 * the first time any process acts as that domain; `vchansim domain destroy` removes it.
 * Listing /local/domain needs domain 0's rights, just as Xen's domain-info hypercall
 * does, so any other domain gets EPERM, as a guest does on Xen.  The store is read with
 * Debian's own libxenstore.so.4, loaded at run time so that building these libraries
 * never needs it.
 *
 * Every other function of the real library is exported too (xenctrl-stubs.c), so any
 * program linked against libxenctrl loads; calling one of those ends the program with a
 * line naming the function.
 */
#define _GNU_SOURCE
#include "hubclient.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#if __has_include(<xenctrl.h>)
#include <stddef.h>
#include <xenctrl.h> /* lets the compiler check the prototypes and the layout below */
#define VS_HAVE_XENCTRL_H 1
#else
struct xentoollog_logger;
typedef struct xc_interface_core xc_interface;
typedef struct vs_dominfo xc_dominfo_t;
typedef struct vs_evtchn_status xc_evtchn_status_t;
#endif

/* struct evtchn_status of Xen's public event_channel.h (24 bytes), for the same reason. */
struct vs_evtchn_status {
    uint16_t dom;
    uint32_t port;
    uint32_t status;
    uint32_t vcpu;
    union {
        struct {
            uint16_t dom;
        } unbound;
        struct {
            uint16_t dom;
            uint32_t port;
        } interdomain;
        uint32_t pirq;
        uint32_t virq;
    } u;
};

/*
 * xc_dominfo_t of Xen 4.17 on x86_64, field for field (112 bytes).  Declared here
 * because Xen's headers are optional for this build; when they are present the
 * assertions below hold it to theirs.
 */
struct vs_dominfo {
    uint32_t domid;
    uint32_t ssidref;
    unsigned int dying : 1, crashed : 1, shutdown : 1, paused : 1, blocked : 1, running : 1,
        hvm : 1, debugged : 1, xenstore : 1, hap : 1;
    unsigned int shutdown_reason;
    unsigned long nr_pages;
    unsigned long nr_outstanding_pages;
    unsigned long nr_shared_pages;
    unsigned long nr_paged_pages;
    unsigned long shared_info_frame;
    uint64_t cpu_time;
    unsigned long max_memkb;
    unsigned int nr_online_vcpus;
    unsigned int max_vcpu_id;
    uint8_t handle[16];
    unsigned int cpupool;
    uint8_t gpaddr_bits;
    struct {
        uint32_t emulation_flags;
        uint32_t misc_flags;
    } arch_config;
};

#ifdef VS_HAVE_XENCTRL_H
#define VS_SAME_FIELD(f) \
    _Static_assert(offsetof(struct vs_dominfo, f) == offsetof(xc_dominfo_t, f), #f " moved")
VS_SAME_FIELD(shutdown_reason);
VS_SAME_FIELD(nr_pages);
VS_SAME_FIELD(cpu_time);
VS_SAME_FIELD(max_memkb);
VS_SAME_FIELD(nr_online_vcpus);
VS_SAME_FIELD(max_vcpu_id);
VS_SAME_FIELD(handle);
VS_SAME_FIELD(cpupool);
VS_SAME_FIELD(gpaddr_bits);
VS_SAME_FIELD(arch_config);
_Static_assert(sizeof(struct vs_dominfo) == sizeof(xc_dominfo_t), "xc_dominfo_t size");
_Static_assert(offsetof(struct vs_evtchn_status, u.interdomain.port) ==
                   offsetof(xc_evtchn_status_t, u.interdomain.port),
               "evtchn_status moved");
_Static_assert(sizeof(struct vs_evtchn_status) == sizeof(xc_evtchn_status_t),
               "evtchn_status size");
#endif

/* Xen's EVTCHNSTAT_unbound and _interdomain, as EVT_STATUS answers them. */
#define VS_EVTCHNSTAT_UNBOUND 1u
#define VS_EVTCHNSTAT_INTERDOMAIN 2u

/* The libxenstore calls used, looked up in Debian's libxenstore.so.4 (xenstore.h). */
struct vs_xs {
    void *lib;
    void *(*open)(unsigned long flags);
    void (*close)(void *xsh);
    char **(*directory)(void *xsh, uint32_t t, const char *path, unsigned int *num);
};

#define VS_XBT_NULL 0u
#define VS_DOMAINS "/local/domain"
#define VS_LIBXENSTORE "libxenstore.so.4"

struct xc_interface_core {
    struct vs_xs xs;
    void *xsh;         /* one xenstored connection per handle, as Xen's holds one privcmd fd */
    struct vs_hub hub; /* for xc_evtchn_status: one round trip each, no reconnecting */
    pid_t hub_pid;     /* the process that opened hub: a forked child opens its own */
    pthread_mutex_t lock; /* guards hub and hub_pid (vs_hub_open re-creates hub.lock) */
};

/*
 * The handle's hub connection, for this process: a child forked with the handle (qrexec
 * forks one per service call) must not share its parent's connection, whose replies the
 * two would steal from each other.  Its copy is closed, which leaves the parent's open.
 * Called with the lock held; returns 0, or -1 with errno.
 */
static int own_hub(xc_interface *xch)
{
    if (xch->hub_pid == getpid())
        return 0;
    close(xch->hub.fd);
    xch->hub.fd = -1;
    if (vs_hub_open(&xch->hub, "xc_evtchn_status", 1) < 0)
        return -1;
    xch->hub_pid = getpid();
    return 0;
}

/* libxenevtchn.so.1, loaded first, has reported any emulator-environment mistake. */
__attribute__((constructor)) static void vs_xenctrl_loaded(void)
{
    vs_absorb_environment_errors();
}

/* Load libxenstore and its three calls; on failure say which package provides it. */
static int load_xenstore(struct vs_xs *xs)
{
    xs->lib = dlopen(VS_LIBXENSTORE, RTLD_NOW | RTLD_LOCAL);
    if (!xs->lib) {
        vs_log("xc_interface_open",
               "%s, Xen's XenStore client, is not installed (%s); Debian/Ubuntu: apt-get "
               "install libxenstore4",
               VS_LIBXENSTORE, dlerror());
        errno = ENOENT;
        return -1;
    }
    *(void **)&xs->open = dlsym(xs->lib, "xs_open");
    *(void **)&xs->close = dlsym(xs->lib, "xs_close");
    *(void **)&xs->directory = dlsym(xs->lib, "xs_directory");
    if (!xs->open || !xs->close || !xs->directory) {
        vs_log("xc_interface_open", "%s lacks xs_open/xs_close/xs_directory", VS_LIBXENSTORE);
        dlclose(xs->lib);
        errno = ENOSYS;
        return -1;
    }
    return 0;
}

/*
 * Where Xen opens /dev/xen/privcmd, check the emulator environment and the hub (one
 * clear line if either is missing), then connect to this domain's xenstored.  The
 * loggers and flags are ignored.
 */
xc_interface *xc_interface_open(struct xentoollog_logger *logger,
                                struct xentoollog_logger *dombuild_logger, unsigned open_flags)
{
    xc_interface *xch;
    int err;

    (void)logger;
    (void)dombuild_logger;
    (void)open_flags;
    xch = calloc(1, sizeof(*xch));
    if (!xch)
        return NULL;
    if (vs_hub_open(&xch->hub, "xc_interface_open", 1) < 0)
        goto no_hub;
    xch->hub_pid = getpid();
    pthread_mutex_init(&xch->lock, NULL);
    vs_prepare_environment(); /* $XENSTORED_PATH, if no other library has set it yet */
    if (load_xenstore(&xch->xs) < 0)
        goto no_xenstore;
    xch->xsh = xch->xs.open(0);
    if (xch->xsh)
        return xch;
    err = errno;
    vs_log("xc_interface_open", "cannot reach the emulated xenstored at %s (%s)",
           getenv("XENSTORED_PATH"), strerror(err));
    dlclose(xch->xs.lib);
    errno = err;
no_xenstore:
    err = errno;
    pthread_mutex_destroy(&xch->lock);
    vs_hub_close(&xch->hub);
    errno = err;
no_hub:
    err = errno;
    free(xch);
    errno = err;
    return NULL;
}

int xc_interface_close(xc_interface *xch)
{
    if (!xch)
        return 0;
    xch->xs.close(xch->xsh);
    dlclose(xch->xs.lib);
    vs_hub_close(&xch->hub);
    pthread_mutex_destroy(&xch->lock);
    free(xch);
    return 0;
}

/*
 * EVTCHNOP_status, asked of the hub (EVT_STATUS), with Xen's errors: ESRCH for a domain
 * that does not exist, EPERM for a guest asking about another domain, EINVAL for a port
 * not valid there.  Xen's library logs nothing on these, and neither does this: callers
 * such as libvchan-xen use them as answers ("is that domain alive?"), many times a second.
 */
int xc_evtchn_status(xc_interface *xch, xc_evtchn_status_t *status)
{
    struct vs_evtchn_status *st = (struct vs_evtchn_status *)status;
    uint32_t args[2] = {st->dom, st->port};
    unsigned char buf[12];
    struct vs_reply reply = {.buf = buf, .cap = sizeof(buf)};
    int rc;

    pthread_mutex_lock(&xch->lock);
    rc = own_hub(xch);
    if (rc == 0)
        rc = vs_hub_ask(&xch->hub, "xc_evtchn_status", VS_EVT_STATUS, args, 2, &reply);
    pthread_mutex_unlock(&xch->lock);
    if (rc < 0)
        return -1;
    if (vs_reply_words(&reply) != 3) {
        errno = EPROTO;
        return -1;
    }
    st->status = vs_reply_word(&reply, 0);
    st->vcpu = 0;
    memset(&st->u, 0, sizeof(st->u));
    if (st->status == VS_EVTCHNSTAT_UNBOUND) {
        st->u.unbound.dom = (uint16_t)vs_reply_word(&reply, 1);
    } else if (st->status == VS_EVTCHNSTAT_INTERDOMAIN) {
        st->u.interdomain.dom = (uint16_t)vs_reply_word(&reply, 1);
        st->u.interdomain.port = vs_reply_word(&reply, 2);
    }
    return 0;
}

static int by_value(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return (x > y) - (x < y);
}

/* A XenStore key that is a domain id, as Xen writes them (decimal, no sign or padding). */
static bool parse_domid_key(const char *key, uint32_t *domid)
{
    char *end;
    unsigned long value;

    if (key[0] < '0' || key[0] > '9' || (key[0] == '0' && key[1]))
        return false;
    errno = 0;
    value = strtoul(key, &end, 10);
    if (errno || *end || value > 0x7FEFul)
        return false;
    *domid = (uint32_t)value;
    return true;
}

/*
 * The ids >= first of the existing domains, ascending, in a malloc'd array (*ids) of
 * *count.  Returns 0, or -1 with errno: EPERM for a caller other than domain 0.
 */
static int existing_domains(xc_interface *xch, uint32_t first, uint32_t **ids, unsigned *count)
{
    unsigned int n;
    char **keys = xch->xs.directory(xch->xsh, VS_XBT_NULL, VS_DOMAINS, &n);

    if (!keys) {
        if (errno == EACCES) /* the store refuses a guest, as Xen refuses its domctl */
            errno = EPERM;
        else
            vs_log("xc_domain_getinfo", "cannot list %s: %s", VS_DOMAINS, strerror(errno));
        return -1;
    }
    *count = 0;
    *ids = malloc((n ? n : 1) * sizeof(**ids));
    if (!*ids) {
        free(keys);
        return -1;
    }
    for (unsigned int i = 0; i < n; i++)
        if (parse_domid_key(keys[i], &(*ids)[*count]) && (*ids)[*count] >= first)
            ++*count;
    free(keys);
    qsort(*ids, *count, sizeof(**ids), by_value);
    return 0;
}

/*
 * Xen's semantics: fill up to `max_doms` entries for the first existing domains whose
 * ids are >= first_domid (so a caller asking about one domain must compare the id it
 * gets), and fail with ESRCH when there is none.  Emulated domains are running, never
 * dying, crashed or shut down, and have one vcpu; counters, handle and sizes are zero.
 */
int xc_domain_getinfo(xc_interface *xch, uint32_t first_domid, unsigned int max_doms,
                      xc_dominfo_t *info)
{
    struct vs_dominfo *out = (struct vs_dominfo *)info;
    uint32_t *ids;
    unsigned int found;

    memset(info, 0, max_doms * sizeof(*out));
    if (max_doms == 0)
        return 0;
    if (existing_domains(xch, first_domid, &ids, &found) < 0)
        return -1;
    if (found > max_doms)
        found = max_doms;
    for (unsigned int i = 0; i < found; i++) {
        out[i].domid = ids[i];
        out[i].running = 1;
        out[i].nr_online_vcpus = 1;
    }
    free(ids);
    if (found == 0) {
        errno = ESRCH;
        return -1;
    }
    return (int)found;
}
