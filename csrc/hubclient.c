/*
 * Hub protocol client: run-directory resolution, HELLO, and one request/reply exchange
 * with descriptors passed as SCM_RIGHTS.  See hubclient.h and docs/hub-protocol.md.
 */
#define _GNU_SOURCE
#include "hubclient.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define VS_PROTOCOL_VERSION 1u
#define VS_HELLO_STRICT 1u
/* Room for the UTF-8 cause the hub appends to an error reply. */
#define VS_MESSAGE_ROOM 1024u

/* Seconds to wait for a hub reply, as the Python client does. */
static const struct timeval call_timeout = {.tv_sec = 10};

static const char run_hint[] = "run this program under `vchansim exec --domid N -- PROGRAM`";

void vs_log(const char *what, const char *fmt, ...)
{
    char line[1200];
    va_list ap;
    int n = snprintf(line, sizeof(line), "vchansim: %s: ", what);

    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < sizeof(line))
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    /* One fprintf per line keeps lines whole when several threads or processes log. */
    fprintf(stderr, "%s\n", line);
}

void vs_close_fds(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

/* The environment mistakes are reported once per library, not at every retry. */
static int env_reported;
/* Set while vs_absorb_environment_errors() runs: mistakes count as said, unprinted. */
static int env_silent;

static int env_error(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int env_error(int err, const char *fmt, ...)
{
    if (!__atomic_exchange_n(&env_reported, 1, __ATOMIC_RELAXED) && !env_silent) {
        char msg[800];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        fprintf(stderr, "vchansim: %s\n", msg);
    }
    errno = err;
    return -1;
}

static int parse_domid(uint32_t *domid)
{
    const char *text = getenv("VCHANSIM_DOMID");
    char *end;
    unsigned long value;

    if (!text || !*text)
        return env_error(ENOENT, "no emulator environment (VCHANSIM_DOMID unset); %s",
                         run_hint);
    errno = 0;
    value = strtoul(text, &end, 10);
    /* Xen gives guests domain ids 0 .. 0x7FEF (DOMID_FIRST_RESERVED - 1). */
    if (errno || *end || text[0] == '-' || value > 0x7FEFul)
        return env_error(EINVAL, "VCHANSIM_DOMID=%s is not a domain id (0..32751)", text);
    *domid = (uint32_t)value;
    return 0;
}

/* $VCHANSIM_RUNDIR, else $XDG_RUNTIME_DIR/vchansim, else /tmp/vchansim-<uid>. */
static int resolve_rundir(char *out, size_t len)
{
    const char *dir = getenv("VCHANSIM_RUNDIR");
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n;

    if (dir && *dir)
        n = snprintf(out, len, "%s", dir);
    else if (xdg && *xdg)
        n = snprintf(out, len, "%s/vchansim", xdg);
    else
        n = snprintf(out, len, "/tmp/vchansim-%u", (unsigned)geteuid());
    if (n < 0 || (size_t)n >= len)
        return env_error(ENAMETOOLONG, "run directory path is too long");
    return 0;
}

/*
 * The run directory is the security boundary (the hub serves whoever reaches its socket),
 * so it must be a real directory of ours closed to everybody else, as the hub demands.
 */
static int check_rundir(const char *dir)
{
    struct stat st;

    if (lstat(dir, &st) < 0)
        return env_error(errno, "no hub: run directory %s: %s; %s", dir, strerror(errno),
                         run_hint);
    if (!S_ISDIR(st.st_mode))
        return env_error(ENOTDIR, "run directory %s is not a directory (a symlink or a file "
                         "is there)", dir);
    if (st.st_uid != geteuid())
        return env_error(EPERM, "run directory %s is owned by uid %u, not by you (uid %u); "
                         "refusing to use it", dir, (unsigned)st.st_uid, (unsigned)geteuid());
    if (st.st_mode & 077)
        return env_error(EPERM, "run directory %s has mode %04o: group and others must have "
                         "no access (chmod 700 it)", dir, (unsigned)(st.st_mode & 07777));
    return 0;
}

static int connect_hub(const char *dir, int cloexec)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int n = snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/hub", dir);
    int fd;

    if (n < 0 || (size_t)n >= sizeof(addr.sun_path))
        return env_error(ENAMETOOLONG, "hub socket path %s/hub is longer than %zu bytes",
                         dir, sizeof(addr.sun_path) - 1);
    fd = socket(AF_UNIX, SOCK_SEQPACKET | (cloexec ? SOCK_CLOEXEC : 0), 0);
    if (fd < 0)
        return -1;
    /* A hub that stopped answering must fail our calls, never hang the program. */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &call_timeout, sizeof(call_timeout));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &call_timeout, sizeof(call_timeout));
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        int err = errno;

        close(fd);
        return env_error(err, "no hub at %s (%s); %s, which starts one", addr.sun_path,
                         strerror(err), run_hint);
    }
    return fd;
}

/* VCHANSIM_STRICT=1 refuses loopback grants as Xen does (the Python backend's switch). */
static int strict_requested(void)
{
    const char *text = getenv("VCHANSIM_STRICT");

    return text && strcmp(text, "1") == 0;
}

int vs_hub_open(struct vs_hub *hub, const char *who, int cloexec)
{
    char dir[PATH_MAX];
    uint32_t args[4];
    unsigned char buf[16];
    struct vs_reply reply = {.buf = buf, .cap = sizeof(buf)};

    hub->fd = -1;
    hub->lost = 0;
    hub->cloexec = cloexec;
    if (parse_domid(&hub->domid) < 0 || resolve_rundir(dir, sizeof(dir)) < 0 ||
        check_rundir(dir) < 0)
        return -1;
    hub->fd = connect_hub(dir, cloexec);
    if (hub->fd < 0)
        return -1;
    pthread_mutex_init(&hub->lock, NULL);
    args[0] = VS_PROTOCOL_VERSION;
    args[1] = hub->domid;
    args[2] = (uint32_t)getpid();
    args[3] = strict_requested() ? VS_HELLO_STRICT : 0;
    if (vs_hub_call(hub, who, VS_HELLO, args, 4, &reply) < 0) {
        int err = errno;

        vs_hub_close(hub);
        errno = err;
        return -1;
    }
    return 0;
}

void vs_hub_close(struct vs_hub *hub)
{
    if (hub->fd < 0)
        return;
    close(hub->fd);
    hub->fd = -1;
    pthread_mutex_destroy(&hub->lock);
}

static int send_request(struct vs_hub *hub, uint32_t op, const uint32_t *args, size_t nargs)
{
    size_t len = 4 * (nargs + 1);
    uint32_t *msg = malloc(len);
    ssize_t sent;

    if (!msg)
        return -1;
    msg[0] = htole32(op);
    for (size_t i = 0; i < nargs; i++)
        msg[i + 1] = htole32(args[i]);
    do
        sent = send(hub->fd, msg, len, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    free(msg);
    return sent < 0 ? -1 : 0;
}

/* Collect the SCM_RIGHTS descriptors of a received message into reply->fds. */
static void take_fds(struct msghdr *msg, struct vs_reply *reply)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *fds = (int *)CMSG_DATA(c);

        for (size_t i = 0; i < n; i++) {
            if (reply->nfds < reply->max_fds)
                reply->fds[reply->nfds++] = fds[i];
            else
                close(fds[i]);
        }
    }
}

static ssize_t receive_reply(struct vs_hub *hub, unsigned char *buf, size_t cap,
                             struct vs_reply *reply)
{
    size_t max_fds = reply && reply->max_fds ? reply->max_fds : 1;
    size_t control_len = CMSG_SPACE(max_fds * sizeof(int));
    char *control = calloc(1, control_len);
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    struct vs_reply discard = {0};
    ssize_t n;

    if (!control)
        return -1;
    msg.msg_control = control;
    msg.msg_controllen = control_len;
    do
        n = recvmsg(hub->fd, &msg, hub->cloexec ? MSG_CMSG_CLOEXEC : 0);
    while (n < 0 && errno == EINTR);
    if (n >= 0)
        take_fds(&msg, reply ? reply : &discard);
    free(control);
    if (n == 0) {
        errno = EPIPE;
        return -1;
    }
    if (n > 0 && (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        if (reply) {
            vs_close_fds(reply->fds, reply->nfds);
            reply->nfds = 0;
        }
        errno = EPROTO;
        return -1;
    }
    return n;
}

/*
 * After a failed exchange the connection cannot be trusted to stay in step (a late reply
 * would answer the next request), so it is shut down: the handle is dead, and the hub
 * releases what it held, as it does when a process dies.
 */
static int transport_failed(struct vs_hub *hub, const char *what)
{
    int err = errno;

    if (err == EAGAIN || err == EWOULDBLOCK)
        err = ETIMEDOUT;
    if (!hub->lost) {
        hub->lost = 1;
        shutdown(hub->fd, SHUT_RDWR);
        if (err == EPROTO)
            vs_log(what, "malformed reply from the hub; handle closed");
        else if (err == ETIMEDOUT)
            vs_log(what, "the hub did not answer within %ld s; handle closed",
                   (long)call_timeout.tv_sec);
        else
            vs_log(what, "lost the hub connection (%s); what was held through it is gone",
                   strerror(err));
    }
    errno = err;
    return -1;
}

static int exchange(struct vs_hub *hub, const char *what, uint32_t op, const uint32_t *args,
                    size_t nargs, struct vs_reply *reply, int log_refusal)
{
    size_t cap = 4 + (reply ? reply->cap : 0) + VS_MESSAGE_ROOM;
    unsigned char *buf = malloc(cap);
    uint32_t status;
    ssize_t n;

    if (!buf)
        return -1;
    if (reply) {
        reply->len = 0;
        reply->nfds = 0;
    }
    if (send_request(hub, op, args, nargs) < 0 ||
        (n = receive_reply(hub, buf, cap, reply)) < 0) {
        free(buf);
        return transport_failed(hub, what);
    }
    if (n < 4) {
        free(buf);
        errno = EPROTO;
        return transport_failed(hub, what);
    }
    memcpy(&status, buf, 4);
    status = le32toh(status);
    if (status != 0) {
        if (log_refusal)
            vs_log(what, "%.*s", (int)(n - 4), (const char *)buf + 4);
        if (reply) {
            vs_close_fds(reply->fds, reply->nfds);
            reply->nfds = 0;
        }
        free(buf);
        errno = (int)status;
        return -1;
    }
    if (reply) {
        if ((size_t)n - 4 > reply->cap) {
            vs_close_fds(reply->fds, reply->nfds);
            reply->nfds = 0;
            free(buf);
            errno = EPROTO;
            return transport_failed(hub, what);
        }
        reply->len = (size_t)n - 4;
        memcpy(reply->buf, buf + 4, reply->len);
    }
    free(buf);
    return 0;
}

int vs_hub_call(struct vs_hub *hub, const char *what, uint32_t op, const uint32_t *args,
                size_t nargs, struct vs_reply *reply)
{
    return exchange(hub, what, op, args, nargs, reply, 1);
}

int vs_hub_ask(struct vs_hub *hub, const char *what, uint32_t op, const uint32_t *args,
               size_t nargs, struct vs_reply *reply)
{
    return exchange(hub, what, op, args, nargs, reply, 0);
}

void vs_prepare_environment(void)
{
    struct vs_hub hub;
    char path[PATH_MAX];
    struct vs_reply reply = {.buf = (unsigned char *)path, .cap = sizeof(path) - 1};
    uint32_t domid;

    if (parse_domid(&domid) < 0 || getenv("XENSTORED_PATH"))
        return;
    if (vs_hub_open(&hub, "xenstore", 1) < 0)
        return;
    if (vs_hub_call(&hub, "xenstore", VS_XS_SOCKET, &domid, 1, &reply) == 0) {
        path[reply.len] = '\0';
        setenv("XENSTORED_PATH", path, 0);
    }
    vs_hub_close(&hub);
}

void vs_absorb_environment_errors(void)
{
    env_silent = 1;
    vs_prepare_environment();
    env_silent = 0;
}
