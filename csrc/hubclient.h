/*
 * Client side of the vchansim hub protocol (docs/hub-protocol.md), shared by the
 * drop-in libxengnttab.so.1 and libxenevtchn.so.1.
 *
 * One struct vs_hub is one hub connection, which the hub treats the way Xen's kernel
 * drivers treat one open /dev/xen/gntalloc, gntdev or evtchn file: closing it (or the
 * process dying) releases everything it holds and fires the registered unmap-notifies.
 * That is why every library handle owns exactly one connection.
 */
#ifndef VCHANSIM_HUBCLIENT_H
#define VCHANSIM_HUBCLIENT_H

#include <endian.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define VS_PAGE_SIZE 4096u

enum vs_op {
    VS_HELLO = 1,
    VS_GNT_SHARE = 2,
    VS_GNT_MAP = 3,
    VS_GNT_UNMAP = 4,
    VS_GNT_SET_NOTIFY = 5,
    VS_EVT_BIND_UNBOUND = 6,
    VS_EVT_BIND_INTERDOMAIN = 7,
    VS_EVT_UNBIND = 8,
    VS_XS_SOCKET = 10,
    VS_EVT_STATUS = 14,
};

/* Most pages one GNT_SHARE or GNT_MAP may carry; larger requests are split. */
#define VS_MAX_PAGES_PER_CALL 256u

struct vs_hub {
    int fd;              /* SOCK_SEQPACKET connection, -1 when closed */
    uint32_t domid;      /* the emulated domain this process is */
    int cloexec;         /* mark descriptors received from the hub close-on-exec */
    int lost;            /* the hub went away and this has been reported */
    /* Serialises requests on the connection and guards the owning handle's state. */
    pthread_mutex_t lock;
};

/* Where one hub reply lands: the bytes after the status word, and any descriptors. */
struct vs_reply {
    unsigned char *buf;  /* caller's buffer */
    size_t cap;
    size_t len;
    int *fds;            /* caller's array; the caller closes what arrives */
    size_t max_fds;
    size_t nfds;
};

/* Word i (counting from r1) of a reply; callers check vs_reply_words() first. */
static inline uint32_t vs_reply_word(const struct vs_reply *reply, size_t i)
{
    uint32_t le;
    memcpy(&le, reply->buf + 4 * i, sizeof(le));
    return le32toh(le);
}

static inline size_t vs_reply_words(const struct vs_reply *reply)
{
    return reply->len / 4;
}

/*
 * Connect to the hub of the run directory and say HELLO as domain $VCHANSIM_DOMID.
 * `who` names the caller in error messages ("xenevtchn_open").  Returns 0, or -1 with
 * errno set after printing one line to stderr saying what is missing and how to fix it.
 */
int vs_hub_open(struct vs_hub *hub, const char *who, int cloexec);

/* Close the connection: the hub releases everything held through it. */
void vs_hub_close(struct vs_hub *hub);

/*
 * Send one request (`nargs` u32 words after the op) and receive its reply; the caller
 * holds hub->lock.  Returns 0, or -1 with errno set to the hub's status (a Linux errno)
 * or to the transport error; the hub's message is printed to stderr prefixed by `what`.
 * On failure no descriptor is left open.  `reply` may be NULL when nothing comes back.
 */
int vs_hub_call(struct vs_hub *hub, const char *what, uint32_t op, const uint32_t *args,
                size_t nargs, struct vs_reply *reply);

/*
 * vs_hub_call for queries whose refusals are answers (EVT_STATUS's ESRCH, EPERM,
 * EINVAL): the same, except that the hub's message is not printed.  Transport failures
 * are still reported.
 */
int vs_hub_ask(struct vs_hub *hub, const char *what, uint32_t op, const uint32_t *args,
               size_t nargs, struct vs_reply *reply);

/*
 * Point libxenstore ($XENSTORED_PATH, unless already set) at this domain's emulated
 * xenstored, asking the hub to create the socket.  Run once at library load so that
 * libxenvchan's xs_open() -- which comes before any grant or event call in a client --
 * reaches the emulator.  Prints the no-environment line when VCHANSIM_DOMID is unset.
 */
void vs_prepare_environment(void);

/*
 * vs_prepare_environment without printing: whatever it finds wrong counts as already
 * reported.  For a library whose dependency's constructor has just run the same checks
 * in the same environment and said so (libxenctrl loads libxenevtchn), so that a
 * mistake gets one line per process, not one per library.
 */
void vs_absorb_environment_errors(void);

/* Close every descriptor in fds[0..n). */
void vs_close_fds(const int *fds, size_t n);

/* Print "vchansim: <what>: <message>" on stderr (the real libraries log errors too). */
void vs_log(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
