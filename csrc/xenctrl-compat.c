/*
 * libxenctrl's event-channel compatibility API (xenctrl_compat.h): the xc_evtchn_* calls
 * that predate libxenevtchn.  Xen's libxenctrl.so.4.17 keeps them as plain forwards to
 * libxenevtchn, its xc_evtchn handle being a xenevtchn_handle; these do the same, to the
 * drop-in libxenevtchn.so.1 built beside this library, so a program mixing the two APIs
 * (libvchan-xen notifies libxenvchan's handle through xc_evtchn_notify) uses one handle.
 */
#define _GNU_SOURCE
#include <stdint.h>

#if __has_include(<xenctrl.h>) && __has_include(<xenevtchn.h>)
#define XC_WANT_COMPAT_EVTCHN_API 1
#include <xenctrl.h> /* lets the compiler check every prototype below against Xen's */
#include <xenevtchn.h>
#else
struct xentoollog_logger;
typedef struct xentoollog_logger xentoollog_logger;
typedef struct xenevtchn_handle xenevtchn_handle;
typedef struct xenevtchn_handle xc_evtchn;
typedef int xc_evtchn_port_or_error_t;
typedef int xenevtchn_port_or_error_t;
typedef uint32_t evtchn_port_t;
typedef uint16_t domid_t;
xenevtchn_handle *xenevtchn_open(xentoollog_logger *logger, unsigned int flags);
int xenevtchn_close(xenevtchn_handle *xce);
int xenevtchn_fd(xenevtchn_handle *xce);
int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port);
xenevtchn_port_or_error_t xenevtchn_bind_unbound_port(xenevtchn_handle *xce, uint32_t domid);
xenevtchn_port_or_error_t xenevtchn_bind_interdomain(xenevtchn_handle *xce, uint32_t domid,
                                                     evtchn_port_t remote_port);
xenevtchn_port_or_error_t xenevtchn_bind_virq(xenevtchn_handle *xce, unsigned int virq);
int xenevtchn_unbind(xenevtchn_handle *xce, evtchn_port_t port);
xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *xce);
int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port);
#endif

xc_evtchn *xc_evtchn_open(xentoollog_logger *logger, unsigned open_flags)
{
    return xenevtchn_open(logger, open_flags);
}

int xc_evtchn_close(xc_evtchn *xce)
{
    return xenevtchn_close(xce);
}

int xc_evtchn_fd(xc_evtchn *xce)
{
    return xenevtchn_fd(xce);
}

int xc_evtchn_notify(xc_evtchn *xce, evtchn_port_t port)
{
    return xenevtchn_notify(xce, port);
}

xc_evtchn_port_or_error_t xc_evtchn_bind_unbound_port(xc_evtchn *xce, uint32_t domid)
{
    return xenevtchn_bind_unbound_port(xce, domid);
}

xc_evtchn_port_or_error_t xc_evtchn_bind_interdomain(xc_evtchn *xce, uint32_t domid,
                                                     evtchn_port_t remote_port)
{
    return xenevtchn_bind_interdomain(xce, domid, remote_port);
}

xc_evtchn_port_or_error_t xc_evtchn_bind_virq(xc_evtchn *xce, unsigned int virq)
{
    return xenevtchn_bind_virq(xce, virq);
}

int xc_evtchn_unbind(xc_evtchn *xce, evtchn_port_t port)
{
    return xenevtchn_unbind(xce, port);
}

xc_evtchn_port_or_error_t xc_evtchn_pending(xc_evtchn *xce)
{
    return xenevtchn_pending(xce);
}

int xc_evtchn_unmask(xc_evtchn *xce, evtchn_port_t port)
{
    return xenevtchn_unmask(xce, port);
}
