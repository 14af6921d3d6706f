/*
 * Drop-in libxengnttab.so.1 for vchansim: grant sharing (xengntshr_*) and grant mapping
 * (xengnttab_*) served by the hub instead of /dev/xen/gntalloc and /dev/xen/gntdev.
 *
 * The hub hands out POSIX shm objects as file descriptors; this library maps them so
 * the caller sees one contiguous buffer, exactly as the real library's mmap of the
 * device does.  Each handle is one hub connection, so closing the handle or dying
 * releases its grants and fires its unmap-notifies, as closing the device file does.
 */
#define _GNU_SOURCE
#include "hubclient.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#if __has_include(<xengnttab.h>)
#include <xengnttab.h> /* lets the compiler check every prototype below against Xen's */
#else
struct xentoollog_logger;
struct xengnttab_grant_copy_segment;
typedef struct xengntdev_handle xengnttab_handle;
typedef struct xengntdev_handle xengntshr_handle;
#endif

#define GNT_FLAG_WRITABLE 1u
/* "No byte" / "no port" in the *_notify calls, as in Xen's API. */
#define VS_NONE ((uint32_t)-1)

/* One contiguous range given to the caller, and the hub handles that back it. */
struct vs_map {
    struct vs_map *next;
    char *addr;
    uint32_t npages;
    uint32_t nhandles;
    uint32_t handles[];
};

struct xengntdev_handle {
    struct vs_hub hub;
    struct vs_map *maps;
};

/* The *_notify calls' request: byte to clear and port to signal, VS_NONE for neither. */
struct vs_notify {
    uint32_t offset;
    uint32_t port;
};

static const struct vs_notify no_notify = {VS_NONE, VS_NONE};

/* Where page i of a range lives: page `pgno` of shm object `fd`. */
struct vs_page {
    int fd;
    uint32_t pgno;
};

/*
 * What the hub handed out for one range before it is mapped: GNT_SHARE and GNT_MAP
 * requests are split at VS_MAX_PAGES_PER_CALL pages (and, for maps, at a change of
 * granting domain), so one range may need several hub handles and descriptors.
 */
struct vs_pending {
    uint32_t *handles;
    size_t nhandles;
    struct vs_page *pages;
    size_t npages;
    int *fds;
    size_t nfds;
};

static int pending_init(struct vs_pending *p, size_t count)
{
    p->nhandles = p->npages = p->nfds = 0;
    p->handles = calloc(count, sizeof(*p->handles));
    p->pages = calloc(count, sizeof(*p->pages));
    p->fds = calloc(count, sizeof(*p->fds));
    if (p->handles && p->pages && p->fds)
        return 0;
    free(p->handles);
    free(p->pages);
    free(p->fds);
    errno = ENOMEM;
    return -1;
}

static void pending_free(struct vs_pending *p)
{
    vs_close_fds(p->fds, p->nfds);
    free(p->handles);
    free(p->pages);
    free(p->fds);
}

/* Give back to the hub what a failed request had already obtained. */
static void pending_abandon(struct xengntdev_handle *h, struct vs_pending *p)
{
    int err = errno;

    for (size_t i = 0; i < p->nhandles; i++)
        vs_hub_call(&h->hub, "grant release", VS_GNT_UNMAP, &p->handles[i], 1, NULL);
    pending_free(p);
    errno = err;
}

static size_t run_length(const struct vs_page *pages, size_t start, size_t n)
{
    size_t end = start + 1;

    while (end < n && pages[end].fd == pages[start].fd &&
           pages[end].pgno == pages[end - 1].pgno + 1)
        end++;
    return end - start;
}

static void *map_run(void *where, const struct vs_page *first, size_t npages, int prot,
                     int flags)
{
    return mmap(where, npages * VS_PAGE_SIZE, prot, MAP_SHARED | flags, first->fd,
                (off_t)first->pgno * VS_PAGE_SIZE);
}

/*
 * Map the pages as one contiguous range: a single mmap when they are consecutive pages
 * of one object, else an address range reserved PROT_NONE and filled run by run.
 */
static char *map_contiguous(const struct vs_page *pages, size_t n, int prot)
{
    size_t run = run_length(pages, 0, n);
    char *base;

    if (run == n) {
        base = map_run(NULL, pages, n, prot, 0);
        return base == MAP_FAILED ? NULL : base;
    }
    base = mmap(NULL, n * VS_PAGE_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                -1, 0);
    if (base == MAP_FAILED)
        return NULL;
    for (size_t i = 0; i < n; i += run) {
        run = run_length(pages, i, n);
        if (map_run(base + i * VS_PAGE_SIZE, &pages[i], run, prot, MAP_FIXED) == MAP_FAILED) {
            int err = errno;

            munmap(base, n * VS_PAGE_SIZE);
            errno = err;
            return NULL;
        }
    }
    return base;
}

/* Register the unmap-notify of a one-page range, if one was asked for. */
static int set_notify(struct xengntdev_handle *h, const struct vs_map *map,
                      const struct vs_notify *notify, const char *what)
{
    uint32_t args[3] = {map->handles[0], notify->offset, notify->port};

    if (notify->offset == VS_NONE && notify->port == VS_NONE)
        return 0;
    return vs_hub_call(&h->hub, what, VS_GNT_SET_NOTIFY, args, 3, NULL);
}

static int release_range(struct xengntdev_handle *h, void *addr, uint32_t count,
                         const char *what);

/* Map what the hub handed out and remember it on the handle; NULL with errno on failure. */
static void *commit_range(struct xengntdev_handle *h, struct vs_pending *p, int prot,
                          const struct vs_notify *notify, const char *what)
{
    struct vs_map *map = malloc(sizeof(*map) + p->nhandles * sizeof(uint32_t));
    char *addr = map ? map_contiguous(p->pages, p->npages, prot) : NULL;

    if (!addr) {
        if (!map)
            errno = ENOMEM;
        vs_log(what, "cannot map %zu pages: %s", p->npages, strerror(errno));
        free(map);
        pending_abandon(h, p);
        return NULL;
    }
    map->addr = addr;
    map->npages = (uint32_t)p->npages;
    map->nhandles = (uint32_t)p->nhandles;
    memcpy(map->handles, p->handles, p->nhandles * sizeof(uint32_t));
    map->next = h->maps;
    h->maps = map;
    pending_free(p);
    if (set_notify(h, map, notify, what) < 0) {
        int err = errno;

        release_range(h, addr, map->npages, what);
        errno = err;
        return NULL;
    }
    return addr;
}

/* Find and unlink the range starting at `addr` of exactly `count` pages. */
static struct vs_map *take_range(struct xengntdev_handle *h, void *addr, uint32_t count)
{
    for (struct vs_map **link = &h->maps; *link; link = &(*link)->next) {
        struct vs_map *map = *link;

        if (map->addr == addr && map->npages == count) {
            *link = map->next;
            return map;
        }
    }
    return NULL;
}

/*
 * munmap, then give the hub handles back (which fires a registered unmap-notify), in
 * the order the real drivers see it.  A hub that has gone away cannot be told, but the
 * local unmapping -- what the caller can observe -- has happened, so that is success.
 */
static int release_range(struct xengntdev_handle *h, void *addr, uint32_t count,
                         const char *what)
{
    struct vs_map *map = take_range(h, addr, count);

    if (!map) {
        errno = EINVAL;
        return -1;
    }
    munmap(map->addr, (size_t)map->npages * VS_PAGE_SIZE);
    for (uint32_t i = 0; i < map->nhandles; i++)
        if (vs_hub_call(&h->hub, what, VS_GNT_UNMAP, &map->handles[i], 1, NULL) < 0 &&
            h->hub.lost)
            break;
    free(map);
    return 0;
}

static struct xengntdev_handle *open_handle(const char *who)
{
    struct xengntdev_handle *h = calloc(1, sizeof(*h));

    if (!h) {
        errno = ENOMEM;
        return NULL;
    }
    if (vs_hub_open(&h->hub, who, 1) < 0) {
        int err = errno;

        free(h);
        errno = err;
        return NULL;
    }
    return h;
}

/*
 * Unmap everything and drop the connection; the hub then revokes and unmaps whatever
 * the connection held.  No per-range hub request is sent, so this is also the safe way
 * for a forked child to let go of an inherited handle.
 */
static int close_handle(struct xengntdev_handle *h)
{
    if (!h)
        return 0;
    while (h->maps) {
        struct vs_map *map = h->maps;

        h->maps = map->next;
        munmap(map->addr, (size_t)map->npages * VS_PAGE_SIZE);
        free(map);
    }
    vs_hub_close(&h->hub);
    free(h);
    return 0;
}

/* ------------------------------------------------------------------ grant mapping */

xengnttab_handle *xengnttab_open(struct xentoollog_logger *logger, unsigned open_flags)
{
    (void)logger;
    (void)open_flags;
    return open_handle("xengnttab_open");
}

int xengnttab_close(xengnttab_handle *xgt)
{
    return close_handle(xgt);
}

int xengnttab_fd(xengnttab_handle *xgt)
{
    return xgt->hub.fd;
}

/* One GNT_MAP for refs[0..n) granted by `domid`, appended to `p`. */
static int map_chunk(struct xengntdev_handle *h, struct vs_pending *p, uint32_t domid,
                     const uint32_t *refs, size_t n, int writable)
{
    uint32_t *args = malloc((3 + n) * sizeof(uint32_t));
    unsigned char *buf = malloc(4 * (2 + 2 * n));
    struct vs_reply reply = {.buf = buf, .cap = 4 * (2 + 2 * n), .fds = p->fds + p->nfds,
                             .max_fds = n};
    int rc = -1;

    if (!args || !buf) {
        errno = ENOMEM;
        goto out;
    }
    args[0] = domid;
    args[1] = writable ? GNT_FLAG_WRITABLE : 0;
    args[2] = (uint32_t)n;
    memcpy(args + 3, refs, n * sizeof(uint32_t));
    if (vs_hub_call(&h->hub, "xengnttab_map", VS_GNT_MAP, args, 3 + n, &reply) < 0)
        goto out;
    p->handles[p->nhandles++] = vs_reply_word(&reply, 0);
    size_t base = p->nfds;

    p->nfds += reply.nfds;
    if (vs_reply_words(&reply) != 2 + 2 * n || vs_reply_word(&reply, 1) != reply.nfds) {
        errno = EPROTO;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t index = vs_reply_word(&reply, 2 + 2 * i);

        if (index >= reply.nfds) {
            errno = EPROTO;
            goto out;
        }
        p->pages[p->npages].fd = p->fds[base + index];
        p->pages[p->npages++].pgno = vs_reply_word(&reply, 3 + 2 * i);
    }
    rc = 0;
out:
    free(args);
    free(buf);
    return rc;
}

/* Map `count` grants, split into hub requests by granting domain and size. */
static void *map_refs(struct xengntdev_handle *h, uint32_t count, const uint32_t *domids,
                      uint32_t domid, const uint32_t *refs, int prot,
                      const struct vs_notify *notify)
{
    struct vs_pending p;
    void *addr = NULL;

    if (count == 0) {
        errno = EINVAL;
        return NULL;
    }
    if (pending_init(&p, count) < 0)
        return NULL;
    pthread_mutex_lock(&h->hub.lock);
    for (uint32_t start = 0, end; start < count; start = end) {
        uint32_t dom = domids ? domids[start] : domid;

        for (end = start + 1; end < count && end - start < VS_MAX_PAGES_PER_CALL &&
                              (!domids || domids[end] == dom);
             end++)
            ;
        if (map_chunk(h, &p, dom, refs + start, end - start, prot & PROT_WRITE) < 0) {
            pending_abandon(h, &p);
            goto out;
        }
    }
    addr = commit_range(h, &p, prot, notify, "xengnttab_map");
out:
    pthread_mutex_unlock(&h->hub.lock);
    return addr;
}

void *xengnttab_map_grant_ref(xengnttab_handle *xgt, uint32_t domid, uint32_t ref, int prot)
{
    return map_refs(xgt, 1, NULL, domid, &ref, prot, &no_notify);
}

void *xengnttab_map_grant_refs(xengnttab_handle *xgt, uint32_t count, uint32_t *domids,
                               uint32_t *refs, int prot)
{
    return map_refs(xgt, count, domids, 0, refs, prot, &no_notify);
}

void *xengnttab_map_domain_grant_refs(xengnttab_handle *xgt, uint32_t count, uint32_t domid,
                                      uint32_t *refs, int prot)
{
    return map_refs(xgt, count, NULL, domid, refs, prot, &no_notify);
}

void *xengnttab_map_grant_ref_notify(xengnttab_handle *xgt, uint32_t domid, uint32_t ref,
                                     int prot, uint32_t notify_offset, uint32_t notify_port)
{
    struct vs_notify notify = {notify_offset, notify_port};

    return map_refs(xgt, 1, NULL, domid, &ref, prot, &notify);
}

int xengnttab_unmap(xengnttab_handle *xgt, void *start_address, uint32_t count)
{
    int rc;

    pthread_mutex_lock(&xgt->hub.lock);
    rc = release_range(xgt, start_address, count, "xengnttab_unmap");
    pthread_mutex_unlock(&xgt->hub.lock);
    return rc;
}

int xengnttab_set_max_grants(xengnttab_handle *xgt, uint32_t nr_grants)
{
    (void)xgt;
    (void)nr_grants;
    return 0;
}

/* Calls that need a real hypervisor: say so once per call, and fail as Xen's library does
 * when the kernel lacks the feature. */
static int unsupported(const char *what)
{
    vs_log(what, "not emulated by vchansim (needs a real Xen hypervisor)");
    errno = EOPNOTSUPP;
    return -1;
}

int xengnttab_grant_copy(xengnttab_handle *xgt, uint32_t count,
                         struct xengnttab_grant_copy_segment *segs)
{
    (void)xgt;
    (void)count;
    (void)segs;
    return unsupported("xengnttab_grant_copy");
}

int xengnttab_dmabuf_exp_from_refs(xengnttab_handle *xgt, uint32_t domid, uint32_t flags,
                                   uint32_t count, const uint32_t *refs, uint32_t *fd)
{
    (void)xgt;
    (void)domid;
    (void)flags;
    (void)count;
    (void)refs;
    (void)fd;
    return unsupported("xengnttab_dmabuf_exp_from_refs");
}

int xengnttab_dmabuf_exp_wait_released(xengnttab_handle *xgt, uint32_t fd, uint32_t wait_to_ms)
{
    (void)xgt;
    (void)fd;
    (void)wait_to_ms;
    return unsupported("xengnttab_dmabuf_exp_wait_released");
}

int xengnttab_dmabuf_imp_to_refs(xengnttab_handle *xgt, uint32_t domid, uint32_t fd,
                                 uint32_t count, uint32_t *refs)
{
    (void)xgt;
    (void)domid;
    (void)fd;
    (void)count;
    (void)refs;
    return unsupported("xengnttab_dmabuf_imp_to_refs");
}

int xengnttab_dmabuf_imp_release(xengnttab_handle *xgt, uint32_t fd)
{
    (void)xgt;
    (void)fd;
    return unsupported("xengnttab_dmabuf_imp_release");
}

/* ------------------------------------------------------------------ grant sharing */

xengntshr_handle *xengntshr_open(struct xentoollog_logger *logger, unsigned open_flags)
{
    (void)logger;
    (void)open_flags;
    return open_handle("xengntshr_open");
}

int xengntshr_close(xengntshr_handle *xgs)
{
    return close_handle(xgs);
}

int xengntshr_fd(xengntshr_handle *xgs)
{
    return xgs->hub.fd;
}

/* One GNT_SHARE of n pages, appended to `p`; their refs go to refs[0..n). */
static int share_chunk(struct xengntdev_handle *h, struct vs_pending *p, uint32_t domid,
                       size_t n, int writable, uint32_t *refs)
{
    uint32_t args[3] = {domid, (uint32_t)n, writable ? GNT_FLAG_WRITABLE : 0};
    unsigned char *buf = malloc(4 * (2 + n));
    struct vs_reply reply = {.buf = buf, .cap = 4 * (2 + n), .fds = p->fds + p->nfds,
                             .max_fds = 1};

    if (!buf) {
        errno = ENOMEM;
        return -1;
    }
    if (vs_hub_call(&h->hub, "xengntshr_share", VS_GNT_SHARE, args, 3, &reply) < 0) {
        free(buf);
        return -1;
    }
    p->handles[p->nhandles++] = vs_reply_word(&reply, 0);
    p->nfds += reply.nfds;
    if (reply.nfds != 1 || vs_reply_words(&reply) != 2 + n || vs_reply_word(&reply, 1) != n) {
        free(buf);
        errno = EPROTO;
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        refs[i] = vs_reply_word(&reply, 2 + i);
        p->pages[p->npages].fd = reply.fds[0];
        p->pages[p->npages++].pgno = (uint32_t)i;
    }
    free(buf);
    return 0;
}

/* Share `count` fresh pages, split into hub requests of at most VS_MAX_PAGES_PER_CALL. */
static void *share(struct xengntdev_handle *xgs, uint32_t domid, int count, uint32_t *refs,
                   int writable, const struct vs_notify *notify)
{
    struct vs_pending p;
    void *addr = NULL;

    if (count <= 0) {
        errno = EINVAL;
        return NULL;
    }
    if (pending_init(&p, (size_t)count) < 0)
        return NULL;
    pthread_mutex_lock(&xgs->hub.lock);
    for (size_t start = 0, n; start < (size_t)count; start += n) {
        n = (size_t)count - start;
        if (n > VS_MAX_PAGES_PER_CALL)
            n = VS_MAX_PAGES_PER_CALL;
        if (share_chunk(xgs, &p, domid, n, writable, refs + start) < 0) {
            pending_abandon(xgs, &p);
            goto out;
        }
    }
    addr = commit_range(xgs, &p, PROT_READ | PROT_WRITE, notify, "xengntshr_share");
out:
    pthread_mutex_unlock(&xgs->hub.lock);
    return addr;
}

void *xengntshr_share_pages(xengntshr_handle *xgs, uint32_t domid, int count, uint32_t *refs,
                            int writable)
{
    return share(xgs, domid, count, refs, writable, &no_notify);
}

void *xengntshr_share_page_notify(xengntshr_handle *xgs, uint32_t domid, uint32_t *ref,
                                  int writable, uint32_t notify_offset, uint32_t notify_port)
{
    struct vs_notify notify = {notify_offset, notify_port};

    return share(xgs, domid, 1, ref, writable, &notify);
}

int xengntshr_unshare(xengntshr_handle *xgs, void *start_address, uint32_t count)
{
    int rc;

    pthread_mutex_lock(&xgs->hub.lock);
    rc = release_range(xgs, start_address, count, "xengntshr_unshare");
    pthread_mutex_unlock(&xgs->hub.lock);
    return rc;
}
