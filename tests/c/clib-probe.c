/*
 * clib-probe: checks of the drop-in libxengnttab/libxenevtchn calls one by one, through
 * Xen's own headers, as a C program sees them.
 *
 * Usage:  clib-probe CHECK        (run with VCHANSIM_RUNDIR naming a run directory
 *                                  whose hub is running, and VCHANSIM_DOMID set)
 *         clib-probe open         try xenevtchn_open and xengnttab_open once and print
 *                                 "open ok" or "open failed: ERRNO_NAME" for each
 *
 * One process plays several domains: the libraries read VCHANSIM_DOMID whenever a handle
 * is opened, so the probe sets it before each open.  A check prints "ok CHECK" and exits
 * 0, or prints "FAIL CHECK line N: what" and exits 1.  Every wait is bounded (poll with a
 * timeout), so a broken library fails a check instead of hanging it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xenevtchn.h>
#include <xengnttab.h>

#define PAGE 4096
#define WAIT_MS 5000

static const char *check_name;

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            printf("FAIL %s line %d: %s (errno %s)\n", check_name, __LINE__, #cond,         \
                   strerrorname_np(errno) ? strerrorname_np(errno) : "0");                  \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

#define CHECK_ERRNO(call, expected)                                                         \
    do {                                                                                    \
        errno = 0;                                                                          \
        CHECK((call) && errno == (expected));                                               \
    } while (0)

static void as_domain(unsigned domid)
{
    char text[16];

    snprintf(text, sizeof(text), "%u", domid);
    setenv("VCHANSIM_DOMID", text, 1);
}

static xengntshr_handle *gntshr_as(unsigned domid)
{
    xengntshr_handle *h;

    as_domain(domid);
    h = xengntshr_open(NULL, 0);
    CHECK(h != NULL);
    return h;
}

static xengnttab_handle *gnttab_as(unsigned domid)
{
    xengnttab_handle *h;

    as_domain(domid);
    h = xengnttab_open(NULL, 0);
    CHECK(h != NULL);
    return h;
}

static xenevtchn_handle *evtchn_as(unsigned domid)
{
    xenevtchn_handle *h;

    as_domain(domid);
    h = xenevtchn_open(NULL, 0);
    CHECK(h != NULL);
    return h;
}

/* Whether the handle's descriptor polls readable within `ms`. */
static int readable(xenevtchn_handle *h, int ms)
{
    struct pollfd p = {.fd = xenevtchn_fd(h), .events = POLLIN};

    return poll(&p, 1, ms) == 1;
}

/* The next pending port, waiting at most WAIT_MS; -1 if none came. */
static int next_port(xenevtchn_handle *h)
{
    return readable(h, WAIT_MS) ? xenevtchn_pending(h) : -1;
}

static void set_nonblocking(xenevtchn_handle *h)
{
    int fd = xenevtchn_fd(h);

    CHECK(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
}

/* A freshly bound interdomain port starts pending (as Xen's evtchn_bind_interdomain sets
 * it), once: take that event, so that what follows sees only the events it sends. */
static void take_bind_event(xenevtchn_handle *h, int port)
{
    CHECK(next_port(h) == port);
    CHECK(xenevtchn_unmask(h, (evtchn_port_t)port) == 0);
    CHECK(!readable(h, 0));
}

/* An interdomain channel between dom1 (unbound side) and dom2. */
struct channel {
    xenevtchn_handle *e1, *e2;
    int p1, p2;
};

static struct channel connect_domains(void)
{
    struct channel c;

    c.e1 = evtchn_as(1);
    c.e2 = evtchn_as(2);
    c.p1 = xenevtchn_bind_unbound_port(c.e1, 2);
    CHECK(c.p1 > 0);
    c.p2 = xenevtchn_bind_interdomain(c.e2, 1, (evtchn_port_t)c.p1);
    CHECK(c.p2 > 0);
    take_bind_event(c.e2, c.p2);
    return c;
}

static void mark_pages(unsigned char *base, int count, int tag)
{
    for (int i = 0; i < count; i++)
        memset(base + (size_t)i * PAGE, tag + i, PAGE);
}

static int page_is(const unsigned char *page, int value)
{
    for (int i = 0; i < PAGE; i++)
        if (page[i] != (unsigned char)value)
            return 0;
    return 1;
}

/* ------------------------------------------------------------------------ checks */

/* Pages shared by dom1 are the very pages dom2 maps, in both directions. */
static void check_share_map(void)
{
    xengntshr_handle *shr = gntshr_as(1);
    xengnttab_handle *tab = gnttab_as(2);
    uint32_t refs[3];
    unsigned char *mine = xengntshr_share_pages(shr, 2, 3, refs, 1);
    unsigned char *theirs;

    CHECK(mine != NULL);
    CHECK(refs[0] && refs[1] && refs[2] && refs[0] != refs[1] && refs[1] != refs[2]);
    CHECK(page_is(mine, 0) && page_is(mine + 2 * PAGE, 0));
    mark_pages(mine, 3, 'a');
    theirs = xengnttab_map_domain_grant_refs(tab, 3, 1, refs, PROT_READ | PROT_WRITE);
    CHECK(theirs != NULL);
    for (int i = 0; i < 3; i++)
        CHECK(page_is(theirs + i * PAGE, 'a' + i));
    theirs[PAGE + 7] = 'Z';
    CHECK(mine[PAGE + 7] == 'Z');
    CHECK(xengnttab_unmap(tab, theirs, 3) == 0);
    CHECK(xengntshr_unshare(shr, mine, 3) == 0);
    CHECK(xengnttab_close(tab) == 0);
    CHECK(xengntshr_close(shr) == 0);
}

/* Refs from two shares in any order are stitched into one contiguous range. */
static void check_stitch(void)
{
    xengntshr_handle *shr = gntshr_as(1);
    xengnttab_handle *tab = gnttab_as(2);
    uint32_t a[2], b[2];
    unsigned char *pa = xengntshr_share_pages(shr, 2, 2, a, 1);
    unsigned char *pb = xengntshr_share_pages(shr, 2, 2, b, 1);
    uint32_t order[4] = {b[0], a[1], b[1], a[0]};
    int expect[4] = {'B', 'a' + 1, 'B' + 1, 'a'};
    unsigned char *m;

    CHECK(pa && pb);
    mark_pages(pa, 2, 'a');
    mark_pages(pb, 2, 'B');
    m = xengnttab_map_domain_grant_refs(tab, 4, 1, order, PROT_READ | PROT_WRITE);
    CHECK(m != NULL);
    for (int i = 0; i < 4; i++)
        CHECK(page_is(m + i * PAGE, expect[i]));
    m[3 * PAGE] = 'Q'; /* lands in a[0] */
    CHECK(pa[0] == 'Q');
    CHECK(xengnttab_unmap(tab, m, 4) == 0);
    /* map_grant_refs with one domid per ref takes the same path */
    uint32_t domids[2] = {1, 1};
    uint32_t two[2] = {a[1], b[0]};

    m = xengnttab_map_grant_refs(tab, 2, domids, two, PROT_READ);
    CHECK(m && page_is(m, 'a' + 1) && page_is(m + PAGE, 'B'));
    CHECK(xengnttab_unmap(tab, m, 2) == 0);
    xengnttab_close(tab);
    xengntshr_close(shr);
}

/* More pages than one hub request carries: split on the way in, one range on the way out. */
static void check_large(void)
{
    enum { N = 300 };
    xengntshr_handle *shr = gntshr_as(1);
    xengnttab_handle *tab = gnttab_as(2);
    static uint32_t refs[N];
    unsigned char *mine = xengntshr_share_pages(shr, 2, N, refs, 1);
    unsigned char *theirs;

    CHECK(mine != NULL);
    for (int i = 0; i < N; i++)
        mine[(size_t)i * PAGE + 100] = (unsigned char)i;
    theirs = xengnttab_map_domain_grant_refs(tab, N, 1, refs, PROT_READ | PROT_WRITE);
    CHECK(theirs != NULL);
    for (int i = 0; i < N; i++)
        CHECK(theirs[(size_t)i * PAGE + 100] == (unsigned char)i);
    CHECK(xengnttab_unmap(tab, theirs, N) == 0);
    CHECK(xengntshr_unshare(shr, mine, N) == 0);
    xengnttab_close(tab);
    xengntshr_close(shr);
}

/* A read-only grant maps only read-only, and the mapping really cannot be written. */
static void check_readonly(void)
{
    xengntshr_handle *shr = gntshr_as(1);
    xengnttab_handle *tab = gnttab_as(2);
    uint32_t ref;
    unsigned char *mine = xengntshr_share_pages(shr, 2, 1, &ref, 0);
    volatile unsigned char *ro;
    int status;
    pid_t child;

    CHECK(mine != NULL);
    mine[0] = 42;
    CHECK_ERRNO(!xengnttab_map_grant_ref(tab, 1, ref, PROT_READ | PROT_WRITE), EACCES);
    ro = xengnttab_map_grant_ref(tab, 1, ref, PROT_READ);
    CHECK(ro != NULL && ro[0] == 42);
    child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        ro[0] = 1;
        _exit(0);
    }
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
    CHECK(mine[0] == 42);
    CHECK(xengnttab_unmap(tab, (void *)ro, 1) == 0);
    xengnttab_close(tab);
    xengntshr_close(shr);
}

/* Xen's refusals, with Xen's errnos. */
static void check_refusals(void)
{
    xengntshr_handle *shr = gntshr_as(1);
    xengnttab_handle *tab2 = gnttab_as(2);
    xengnttab_handle *tab3 = gnttab_as(3);
    uint32_t ref, bogus = 999;
    unsigned char *mine = xengntshr_share_pages(shr, 2, 1, &ref, 1);
    unsigned char *theirs;

    CHECK(mine != NULL);
    CHECK_ERRNO(!xengnttab_map_grant_ref(tab3, 1, ref, PROT_READ), EPERM);
    CHECK_ERRNO(!xengnttab_map_grant_ref(tab2, 1, bogus, PROT_READ), EINVAL);
    CHECK_ERRNO(!xengnttab_map_domain_grant_refs(tab2, 0, 1, &ref, PROT_READ), EINVAL);
    CHECK_ERRNO(!xengntshr_share_pages(shr, 2, 0, &ref, 1), EINVAL);
    theirs = xengnttab_map_grant_ref(tab2, 1, ref, PROT_READ | PROT_WRITE);
    CHECK(theirs != NULL);
    CHECK_ERRNO(xengnttab_unmap(tab2, theirs + PAGE, 1) == -1, EINVAL);
    CHECK_ERRNO(xengnttab_unmap(tab2, theirs, 2) == -1, EINVAL);
    CHECK_ERRNO(xengntshr_unshare(shr, theirs, 1) == -1, EINVAL);
    CHECK(xengnttab_unmap(tab2, theirs, 1) == 0);
    CHECK_ERRNO(xengnttab_unmap(tab2, theirs, 1) == -1, EINVAL);
    CHECK(xengntshr_unshare(shr, mine, 1) == 0);
    /* an unshared (revoked) ref can no longer be mapped */
    CHECK_ERRNO(!xengnttab_map_grant_ref(tab2, 1, ref, PROT_READ), EINVAL);
    CHECK_ERRNO(xengnttab_grant_copy(tab2, 0, NULL) == -1, EOPNOTSUPP);
    CHECK(xengnttab_set_max_grants(tab2, 16) == 0);
    xengnttab_close(tab3);
    xengnttab_close(tab2);
    xengntshr_close(shr);
}

/* Unmapping or unsharing a page with a notify clears its byte and rings the port. */
static void check_unmap_notify(void)
{
    struct channel c = connect_domains();
    xengntshr_handle *shr = gntshr_as(1);
    xengnttab_handle *tab = gnttab_as(2);
    uint32_t ref;
    volatile unsigned char *srv, *cli;

    srv = xengntshr_share_page_notify(shr, 2, &ref, 1, 21, (evtchn_port_t)c.p1);
    CHECK(srv != NULL);
    cli = xengnttab_map_grant_ref_notify(tab, 1, ref, PROT_READ | PROT_WRITE, 20,
                                         (evtchn_port_t)c.p2);
    CHECK(cli != NULL);
    srv[20] = srv[21] = 1;
    CHECK(xengnttab_unmap(tab, (void *)cli, 1) == 0);
    CHECK(next_port(c.e1) == c.p1); /* dom2's notify rings dom1's end */
    CHECK(srv[20] == 0 && srv[21] == 1);
    cli = xengnttab_map_grant_ref(tab, 1, ref, PROT_READ);
    CHECK(cli != NULL);
    CHECK(xengntshr_unshare(shr, (void *)srv, 1) == 0);
    CHECK(next_port(c.e2) == c.p2);
    CHECK(cli[21] == 0); /* the page outlives the revocation for its mapper */
    CHECK(xengnttab_unmap(tab, (void *)cli, 1) == 0);
    xengnttab_close(tab);
    xengntshr_close(shr);
    xenevtchn_close(c.e1);
    xenevtchn_close(c.e2);
}

/* A mapper killed with SIGKILL still clears its byte and wakes its peer. */
static void check_notify_on_kill(void)
{
    xenevtchn_handle *e1 = evtchn_as(1);
    xengntshr_handle *shr = gntshr_as(1);
    int p1 = xenevtchn_bind_unbound_port(e1, 2);
    uint32_t ref;
    volatile unsigned char *srv;
    int pipefd[2], status;
    char byte;
    pid_t child;

    CHECK(p1 > 0);
    srv = xengntshr_share_page_notify(shr, 2, &ref, 1, 21, (evtchn_port_t)p1);
    CHECK(srv != NULL);
    CHECK(pipe(pipefd) == 0);
    child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        xenevtchn_handle *e2 = evtchn_as(2);
        xengnttab_handle *tab = gnttab_as(2);
        int p2 = xenevtchn_bind_interdomain(e2, 1, (evtchn_port_t)p1);
        volatile unsigned char *cli;

        CHECK(p2 > 0);
        cli = xengnttab_map_grant_ref_notify(tab, 1, ref, PROT_READ | PROT_WRITE, 20,
                                             (evtchn_port_t)p2);
        CHECK(cli != NULL);
        cli[20] = 1;
        CHECK(write(pipefd[1], "m", 1) == 1);
        raise(SIGKILL);
    }
    close(pipefd[1]);
    CHECK(read(pipefd[0], &byte, 1) == 1);
    CHECK(waitpid(child, &status, 0) == child && WIFSIGNALED(status));
    CHECK(next_port(e1) == p1);
    CHECK(srv[20] == 0);
    xengntshr_close(shr);
    xenevtchn_close(e1);
}

/* A port fires once until unmasked; an event sent while masked fires at unmask. */
static void check_mask(void)
{
    struct channel c = connect_domains();

    set_nonblocking(c.e1);
    CHECK_ERRNO(xenevtchn_pending(c.e1) == -1, EAGAIN);
    CHECK(!readable(c.e1, 0));
    CHECK(xenevtchn_notify(c.e2, (evtchn_port_t)c.p2) == 0);
    CHECK(xenevtchn_notify(c.e2, (evtchn_port_t)c.p2) == 0);
    CHECK(readable(c.e1, WAIT_MS));
    CHECK(xenevtchn_pending(c.e1) == c.p1);
    CHECK(!readable(c.e1, 0)); /* coalesced, and masked */
    CHECK(xenevtchn_notify(c.e2, (evtchn_port_t)c.p2) == 0);
    CHECK(!readable(c.e1, 50)); /* still masked: the event waits */
    CHECK_ERRNO(xenevtchn_pending(c.e1) == -1, EAGAIN);
    CHECK(xenevtchn_unmask(c.e1, (evtchn_port_t)c.p1) == 0);
    CHECK(readable(c.e1, WAIT_MS));
    CHECK(xenevtchn_pending(c.e1) == c.p1);
    CHECK(xenevtchn_unmask(c.e1, (evtchn_port_t)c.p1) == 0);
    CHECK(!readable(c.e1, 0));
    /* the other direction */
    CHECK(xenevtchn_notify(c.e1, (evtchn_port_t)c.p1) == 0);
    CHECK(next_port(c.e2) == c.p2);
    CHECK(xenevtchn_close(c.e1) == 0);
    CHECK(xenevtchn_close(c.e2) == 0);
}

/* Errors the device would give, and xenevtchn_restrict's rules. */
static void check_evtchn_errors(void)
{
    struct channel c = connect_domains();
    xenevtchn_handle *e3 = evtchn_as(3);
    int other;

    CHECK_ERRNO(xenevtchn_notify(c.e1, 4000) == -1, ENOTCONN);
    CHECK_ERRNO(xenevtchn_unbind(c.e1, 4000) == -1, ENOTCONN);
    CHECK(xenevtchn_unmask(c.e1, 4000) == 0); /* ignored, as by the device */
    CHECK_ERRNO(xenevtchn_bind_interdomain(e3, 1, 4000) == -1, EINVAL);
    CHECK_ERRNO(xenevtchn_bind_interdomain(e3, 1, (evtchn_port_t)c.p1) == -1, EINVAL);
    CHECK_ERRNO(xenevtchn_bind_virq(e3, 0) == -1, EOPNOTSUPP);
    CHECK_ERRNO(xenevtchn_restrict(e3, 0) == -1, EINVAL);
    CHECK(xenevtchn_restrict(e3, 1) == 0);
    CHECK_ERRNO(xenevtchn_restrict(e3, 1) == -1, EACCES);
    CHECK_ERRNO(xenevtchn_bind_unbound_port(e3, 1) == -1, EACCES);
    CHECK_ERRNO(xenevtchn_bind_interdomain(e3, 2, (evtchn_port_t)c.p2) == -1, EACCES);
    other = xenevtchn_bind_unbound_port(c.e1, 3);
    CHECK(other > 0 && other != c.p1);
    CHECK(xenevtchn_bind_interdomain(e3, 1, (evtchn_port_t)other) > 0);
    CHECK(xenevtchn_unbind(c.e1, (evtchn_port_t)c.p1) == 0);
    CHECK_ERRNO(xenevtchn_notify(c.e1, (evtchn_port_t)c.p1) == -1, ENOTCONN);
    xenevtchn_close(e3);
    xenevtchn_close(c.e1);
    xenevtchn_close(c.e2);
}

/* A peer that unbinds leaves the port waiting; a rebind gets it, pending once (the
 * notify sent meanwhile was dropped, not queued). */
static void check_rebind(void)
{
    struct channel c = connect_domains();

    CHECK(xenevtchn_unbind(c.e2, (evtchn_port_t)c.p2) == 0);
    CHECK(xenevtchn_notify(c.e1, (evtchn_port_t)c.p1) == 0); /* dropped */
    c.p2 = xenevtchn_bind_interdomain(c.e2, 1, (evtchn_port_t)c.p1);
    CHECK(c.p2 > 0);
    take_bind_event(c.e2, c.p2);
    CHECK(xenevtchn_notify(c.e1, (evtchn_port_t)c.p1) == 0);
    CHECK(next_port(c.e2) == c.p2);
    CHECK(xenevtchn_notify(c.e2, (evtchn_port_t)c.p2) == 0);
    CHECK(next_port(c.e1) == c.p1);
    xenevtchn_close(c.e2); /* closing the handle unbinds too */
    c.e2 = evtchn_as(2);
    CHECK(xenevtchn_bind_interdomain(c.e2, 1, (evtchn_port_t)c.p1) > 0);
    xenevtchn_close(c.e2);
    xenevtchn_close(c.e1);
}

/* Loopback (a domain granting to itself) works unless VCHANSIM_STRICT=1 asks to refuse it. */
static void check_strict_loopback(void)
{
    xengntshr_handle *shr = gntshr_as(1);
    xengnttab_handle *tab = gnttab_as(1);
    uint32_t ref;
    unsigned char *mine = xengntshr_share_pages(shr, 1, 1, &ref, 1);
    unsigned char *again;

    CHECK(mine != NULL);
    again = xengnttab_map_grant_ref(tab, 1, ref, PROT_READ | PROT_WRITE);
    CHECK(again != NULL);
    again[5] = 5;
    CHECK(mine[5] == 5);
    xengnttab_close(tab);
    xengntshr_close(shr);
    setenv("VCHANSIM_STRICT", "1", 1);
    shr = gntshr_as(1);
    CHECK_ERRNO(!xengntshr_share_pages(shr, 1, 1, &ref, 1), EPERM);
    CHECK(xengntshr_share_pages(shr, 2, 1, &ref, 1) != NULL);
    xengntshr_close(shr);
}

static void *wait_pending(void *arg)
{
    return (void *)(intptr_t)xenevtchn_pending(arg);
}

/* xenevtchn_pending blocks (as a read of the device does) until a port fires. */
static void check_blocking_pending(void)
{
    struct channel c = connect_domains();
    pthread_t waiter;
    struct timespec deadline;
    void *port;

    CHECK(pthread_create(&waiter, NULL, wait_pending, c.e1) == 0);
    CHECK(xenevtchn_notify(c.e2, (evtchn_port_t)c.p2) == 0);
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_MS / 1000;
    CHECK(pthread_timedjoin_np(waiter, &port, &deadline) == 0);
    CHECK((intptr_t)port == c.p1);
    xenevtchn_close(c.e1);
    xenevtchn_close(c.e2);
}

static const char *errno_name(int err)
{
    return strerrorname_np(err) ? strerrorname_np(err) : "unknown";
}

/* Not a check: report how opening fares in the environment given (no hub, no domid...). */
static int try_open(void)
{
    xenevtchn_handle *e = xenevtchn_open(NULL, 0);
    int e_err = errno;
    xengnttab_handle *t = xengnttab_open(NULL, 0);
    int t_err = errno;

    printf("xenevtchn_open %s%s\n", e ? "ok" : "failed: ", e ? "" : errno_name(e_err));
    printf("xengnttab_open %s%s\n", t ? "ok" : "failed: ", t ? "" : errno_name(t_err));
    return 0;
}

static const struct {
    const char *name;
    void (*run)(void);
} checks[] = {
    {"share-map", check_share_map},
    {"stitch", check_stitch},
    {"large", check_large},
    {"readonly", check_readonly},
    {"refusals", check_refusals},
    {"unmap-notify", check_unmap_notify},
    {"notify-on-kill", check_notify_on_kill},
    {"mask", check_mask},
    {"evtchn-errors", check_evtchn_errors},
    {"rebind", check_rebind},
    {"blocking-pending", check_blocking_pending},
    {"strict-loopback", check_strict_loopback},
};

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: clib-probe CHECK|open|list\n");
        return 2;
    }
    if (!strcmp(argv[1], "open"))
        return try_open();
    for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
        if (!strcmp(argv[1], "list")) {
            printf("%s\n", checks[i].name);
        } else if (!strcmp(argv[1], checks[i].name)) {
            check_name = checks[i].name;
            checks[i].run();
            printf("ok %s\n", check_name);
            return 0;
        }
    }
    if (!strcmp(argv[1], "list"))
        return 0;
    fprintf(stderr, "clib-probe: unknown check %s\n", argv[1]);
    return 2;
}
