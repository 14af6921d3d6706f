/*
 * xc-probe: call the libxenctrl functions vchan programs use, compiled against Xen's own
 * <xenctrl.h>, so a run under the emulator checks vchansim's drop-in libxenctrl.so.4.17
 * against Debian 4.17's ABI -- including the exact xc_dominfo_t layout it fills.
 *
 * Usage:
 *   xc-probe open                 open and close an interface handle
 *   xc-probe getinfo FIRST MAX    xc_domain_getinfo(xch, FIRST, MAX, info)
 *   xc-probe status DOM PORT      xc_evtchn_status of PORT (-1 allowed) in domain DOM
 *   xc-probe status-fork DOM PORT the same in this process, then in a forked child, then
 *                                 here again (the handle was opened before the fork)
 *   xc-probe compat DOMID         pair two xc_evtchn handles (this domain, DOMID) through
 *                                 the compatibility API and ring each way
 *   xc-probe unemulated           call xc_domain_pause, which the emulator lacks
 *   xc-probe grant-copy           call xengnttab_grant_copy, which the emulator refuses
 *
 * Output, one line per fact:
 *   open ok | open failed ERRNO
 *   getinfo RC ERRNO              RC as returned; ERRNO "-" when RC >= 0
 *   domain ID ok                  entry i holds exactly what the emulator promises for
 *                                 domain ID (every byte compared, via Xen's layout)
 *   domain ID differs at byte K   ... or the first byte where it does not
 *   unused ok | unused dirty      entries RC..MAX-1 are zero, as Xen leaves them
 *   guard ok | guard overwritten  the entry after the array is untouched
 *   grant-copy RC ERRNO
 *   status RC ERRNO STATE DOM PORT  RC and errno as above; the status, and for unbound
 *                                 (1) its remote domain, for interdomain (2) its remote
 *                                 domain and port, else "- -"
 *   compat STEP RESULT            one line per compatibility call (see compat())
 *   returned                      (unemulated) the call came back, which it must not
 * Exit status: 0, or 2 for usage errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>
#define XC_WANT_COMPAT_EVTCHN_API 1
#include <xenctrl.h>
#include <xengnttab.h>

#define GUARD_BYTE 0xA5

static const char *errno_name(int err)
{
    return strerrorname_np(err) ? strerrorname_np(err) : "unknown";
}

static xc_interface *open_or_report(void)
{
    xc_interface *xch = xc_interface_open(NULL, NULL, 0);

    if (!xch)
        printf("open failed %s\n", errno_name(errno));
    return xch;
}

/* What the emulator promises for an existing domain: running, one vcpu, all else zero. */
static void expected_entry(xc_dominfo_t *want, uint32_t domid)
{
    memset(want, 0, sizeof(*want));
    want->domid = domid;
    want->running = 1;
    want->nr_online_vcpus = 1;
}

static void report_entry(const xc_dominfo_t *got)
{
    xc_dominfo_t want;
    const unsigned char *a = (const void *)got, *b = (const void *)&want;

    expected_entry(&want, got->domid);
    for (size_t k = 0; k < sizeof(want); k++) {
        if (a[k] != b[k]) {
            printf("domain %u differs at byte %zu\n", got->domid, k);
            return;
        }
    }
    printf("domain %u ok\n", got->domid);
}

static int all_bytes(const void *p, size_t n, unsigned char value)
{
    const unsigned char *c = p;

    for (size_t i = 0; i < n; i++)
        if (c[i] != value)
            return 0;
    return 1;
}

static int getinfo(unsigned long first, unsigned long max)
{
    xc_interface *xch = open_or_report();
    xc_dominfo_t *info;
    int rc;

    if (!xch)
        return 0;
    info = malloc((max + 1) * sizeof(*info)); /* one extra entry: the guard */
    memset(info, GUARD_BYTE, (max + 1) * sizeof(*info));
    rc = xc_domain_getinfo(xch, (uint32_t)first, (unsigned)max, info);
    printf("getinfo %d %s\n", rc, rc < 0 ? errno_name(errno) : "-");
    for (int i = 0; i < rc; i++)
        report_entry(&info[i]);
    printf("unused %s\n", all_bytes(&info[rc > 0 ? rc : 0],
                                    (max - (unsigned long)(rc > 0 ? rc : 0)) * sizeof(*info), 0)
                              ? "ok"
                              : "dirty");
    printf("guard %s\n",
           all_bytes(&info[max], sizeof(*info), GUARD_BYTE) ? "ok" : "overwritten");
    free(info);
    xc_interface_close(xch);
    return 0;
}

static void report_status(xc_interface *xch, long dom, long port)
{
    xc_evtchn_status_t st;
    int rc;

    memset(&st, 0xA5, sizeof(st));
    st.dom = (domid_t)dom;
    st.port = (evtchn_port_t)port;
    rc = xc_evtchn_status(xch, &st);
    if (rc < 0)
        printf("status %d %s\n", rc, errno_name(errno));
    else if (st.status == EVTCHNSTAT_unbound)
        printf("status 0 - 1 %u -\n", st.u.unbound.dom);
    else if (st.status == EVTCHNSTAT_interdomain)
        printf("status 0 - 2 %u %u\n", st.u.interdomain.dom, st.u.interdomain.port);
    else
        printf("status 0 - %u - -\n", st.status);
    fflush(stdout);
}

static int status(long dom, long port, int fork_too)
{
    xc_interface *xch = open_or_report();
    pid_t child;
    int wstatus;

    if (!xch)
        return 0;
    report_status(xch, dom, port);
    if (fork_too) {
        child = fork();
        if (child == 0) {
            report_status(xch, dom, port);
            _exit(0);
        }
        waitpid(child, &wstatus, 0);
        report_status(xch, dom, port);
    }
    xc_interface_close(xch);
    return 0;
}

static const char *outcome(int rc)
{
    static char text[64];

    if (rc < 0)
        snprintf(text, sizeof(text), "-1 %s", errno_name(errno));
    else
        snprintf(text, sizeof(text), "ok");
    return text;
}

/* Wait up to 10 s for a port of xce; the port, or -1 with a line saying why. */
static int next_pending(xc_evtchn *xce)
{
    struct pollfd pfd = {.fd = xc_evtchn_fd(xce), .events = POLLIN};

    if (poll(&pfd, 1, 10000) != 1) {
        printf("compat poll timed-out\n");
        return -1;
    }
    return xc_evtchn_pending(xce);
}

/*
 * Two handles of this process: a offers a port to domain `remote` (this domain, for a
 * loopback pair), b binds to it.  Prints each step's outcome and the ports' status.
 */
static int compat(long remote)
{
    xc_interface *xch = open_or_report();
    xc_evtchn *a = xc_evtchn_open(NULL, 0), *b = xc_evtchn_open(NULL, 0);
    int pa, pb, got;

    if (!xch || !a || !b) {
        printf("compat open failed %s\n", errno_name(errno));
        return 0;
    }
    printf("compat fds %s\n", xc_evtchn_fd(a) >= 0 && xc_evtchn_fd(b) >= 0 ? "ok" : "bad");
    pa = xc_evtchn_bind_unbound_port(a, (uint32_t)remote);
    printf("compat bind-unbound %s\n", outcome(pa));
    report_status(xch, 0x7FF0, pa);
    pb = xc_evtchn_bind_interdomain(b, (uint32_t)remote, (evtchn_port_t)pa);
    printf("compat bind-interdomain %s\n", outcome(pb));
    report_status(xch, 0x7FF0, pa);
    got = next_pending(b); /* a fresh interdomain port starts pending */
    printf("compat first-pending %s\n", got == pb ? "ok" : outcome(got));
    printf("compat unmask %s\n", outcome(xc_evtchn_unmask(b, (evtchn_port_t)pb)));
    printf("compat notify %s\n", outcome(xc_evtchn_notify(a, (evtchn_port_t)pa)));
    got = next_pending(b);
    printf("compat pending %s\n", got == pb ? "ok" : outcome(got));
    printf("compat notify-back %s\n", outcome(xc_evtchn_notify(b, (evtchn_port_t)pb)));
    got = next_pending(a);
    printf("compat pending-back %s\n", got == pa ? "ok" : outcome(got));
    printf("compat bind-virq %s\n", outcome(xc_evtchn_bind_virq(a, 1)));
    printf("compat unbind %s\n", outcome(xc_evtchn_unbind(b, (evtchn_port_t)pb)));
    report_status(xch, 0x7FF0, pa);
    printf("compat unbind-again %s\n", outcome(xc_evtchn_unbind(b, (evtchn_port_t)pb)));
    printf("compat close %s\n", outcome(xc_evtchn_close(a) | xc_evtchn_close(b)));
    report_status(xch, 0x7FF0, pa);
    xc_interface_close(xch);
    return 0;
}

static int unemulated(void)
{
    xc_interface *xch = open_or_report();

    if (!xch)
        return 0;
    fflush(stdout);
    xc_domain_pause(xch, 1);
    printf("returned\n");
    return 0;
}

static int grant_copy(void)
{
    xengnttab_handle *xgt = xengnttab_open(NULL, 0);
    xengnttab_grant_copy_segment_t seg;
    int rc;

    if (!xgt) {
        printf("open failed %s\n", errno_name(errno));
        return 0;
    }
    memset(&seg, 0, sizeof(seg));
    rc = xengnttab_grant_copy(xgt, 1, &seg);
    printf("grant-copy %d %s\n", rc, rc < 0 ? errno_name(errno) : "-");
    xengnttab_close(xgt);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "open")) {
        xc_interface *xch = open_or_report();

        if (xch)
            printf("open ok\n");
        return xch ? xc_interface_close(xch) : 0;
    }
    if (argc == 4 && !strcmp(argv[1], "getinfo"))
        return getinfo(strtoul(argv[2], NULL, 0), strtoul(argv[3], NULL, 0));
    if (argc == 4 && !strcmp(argv[1], "status"))
        return status(strtol(argv[2], NULL, 0), strtol(argv[3], NULL, 0), 0);
    if (argc == 4 && !strcmp(argv[1], "status-fork"))
        return status(strtol(argv[2], NULL, 0), strtol(argv[3], NULL, 0), 1);
    if (argc == 3 && !strcmp(argv[1], "compat"))
        return compat(strtol(argv[2], NULL, 0));
    if (argc == 2 && !strcmp(argv[1], "unemulated"))
        return unemulated();
    if (argc == 2 && !strcmp(argv[1], "grant-copy"))
        return grant_copy();
    fprintf(stderr, "usage: xc-probe open | getinfo FIRST MAX | status[-fork] DOM PORT | "
                    "compat DOMID | unemulated | grant-copy\n");
    return 2;
}
