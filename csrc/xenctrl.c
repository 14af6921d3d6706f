/*
 * Drop-in libxenctrl.so.4.17 for vchansim: the part of Xen's control library that vchan
 * programs use -- opening the interface and asking whether a domain exists -- answered
 * from the emulated XenStore instead of hypercalls through /dev/xen/privcmd.
 *
 * On the emulator a domain exists when it has a home in the XenStore,
 * /local/domain/<id>: the hub creates it the first time any process acts as that
 * domain, and never removes it (emulated domains do not die).  Listing /local/domain
 * needs domain 0's rights, just as Xen's domain-info hypercall does, so any other
 * domain gets EPERM, as a guest does on Xen.  The store is read with Debian's own
 * libxenstore.so.4, loaded at run time so that building these libraries never needs it.
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

#if __has_include(<xenctrl.h>)
#include <stddef.h>
#include <xenctrl.h> /* lets the compiler check the prototypes and the layout below */
#define VS_HAVE_XENCTRL_H 1
#else
struct xentoollog_logger;
typedef struct xc_interface_core xc_interface;
typedef struct vs_dominfo xc_dominfo_t;
#endif

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
#endif

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
    void *xsh; /* one xenstored connection per handle, as Xen's holds one privcmd fd */
};

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
    struct vs_hub hub;
    xc_interface *xch;

    (void)logger;
    (void)dombuild_logger;
    (void)open_flags;
    if (vs_hub_open(&hub, "xc_interface_open", 1) < 0)
        return NULL;
    vs_hub_close(&hub);
    vs_prepare_environment(); /* $XENSTORED_PATH, if no other library has set it yet */
    xch = calloc(1, sizeof(*xch));
    if (!xch)
        return NULL;
    if (load_xenstore(&xch->xs) < 0) {
        free(xch);
        return NULL;
    }
    xch->xsh = xch->xs.open(0);
    if (!xch->xsh) {
        int err = errno;

        vs_log("xc_interface_open", "cannot reach the emulated xenstored at %s (%s)",
               getenv("XENSTORED_PATH"), strerror(err));
        dlclose(xch->xs.lib);
        free(xch);
        errno = err;
        return NULL;
    }
    return xch;
}

int xc_interface_close(xc_interface *xch)
{
    if (!xch)
        return 0;
    xch->xs.close(xch->xsh);
    dlclose(xch->xs.lib);
    free(xch);
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
