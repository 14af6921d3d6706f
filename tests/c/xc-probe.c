/*
 * xc-probe: call the libxenctrl functions vchan programs use, compiled against Xen's own
 * <xenctrl.h>, so a run under the emulator checks vchansim's drop-in libxenctrl.so.4.17
 * against Debian 4.17's ABI -- including the exact xc_dominfo_t layout it fills.
 *
 * Usage:
 *   xc-probe open                 open and close an interface handle
 *   xc-probe getinfo FIRST MAX    xc_domain_getinfo(xch, FIRST, MAX, info)
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
 *   returned                      (unemulated) the call came back, which it must not
 * Exit status: 0, or 2 for usage errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    if (argc == 2 && !strcmp(argv[1], "unemulated"))
        return unemulated();
    if (argc == 2 && !strcmp(argv[1], "grant-copy"))
        return grant_copy();
    fprintf(stderr, "usage: xc-probe open | getinfo FIRST MAX | unemulated | grant-copy\n");
    return 2;
}
