/*
 * vchan-peer: one end of a vchan driven by Xen's own libxenvchan.
 *
 * The xen backend's interoperability tests run this against vchansim on a real
 * hypervisor (in dom0, or statically linked inside a PV domU), and pair two of them to
 * measure the C library's throughput and round-trip time as the reference figures.
 *
 *   vchan-peer [-r KEY] [-s MINSIZE] [-w SECONDS] ROLE DOMID PATH MODE [N [SIZE]]
 *
 * ROLE is server or client, DOMID the peer's domain id, PATH the XenStore path.  MODE:
 *   echo          send back everything received, until the peer closes
 *   source N      write N bytes of the test pattern, then close
 *   sink N        read N bytes and check them against the test pattern
 *   ping N SIZE   N round trips of SIZE bytes against an echo peer
 * -s asks the server for rings of at least MINSIZE bytes each way; -w lets a client retry
 * for up to SECONDS until the server has published the channel.  A server waits for its
 * client before it starts; timings cover the transfer only (a sink's from its first byte).  The result is printed as
 * one JSON line and, with -r, also written to XenStore key KEY (a guest reports that way).
 * Exit status: 0 success, 1 failure (named on stderr), 2 usage.
 *
 * The test pattern is a fixed 8191-byte block (a prime length, so it never lines up with
 * a power-of-two ring) repeated; vchansim's tests generate the same bytes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libxenvchan.h>
#include <xenstore.h>

#define PATTERN_LEN 8191
#define CHUNK 65536

static unsigned char pattern[PATTERN_LEN];
static unsigned char chunk[CHUNK];

struct options {
    const char *report_key;
    size_t min_size;
    double wait_seconds;
    int server;
    int peer;
    const char *path;
    const char *mode;
    long count;
    long size;
};

struct result {
    long bytes;
    double seconds;
    double rtt_us;
    int ok;
    const char *error;
};

static void make_pattern(void)
{
    uint32_t x = 0x2545F491u;
    for (int i = 0; i < PATTERN_LEN; i++) {
        x = x * 1103515245u + 12345u;
        pattern[i] = (unsigned char)(x >> 16);
    }
}

/* Copy `len` pattern bytes starting at stream offset `offset` into `dst`. */
static void pattern_at(unsigned char *dst, long offset, long len)
{
    long pos = offset % PATTERN_LEN;
    while (len > 0) {
        long piece = PATTERN_LEN - pos < len ? PATTERN_LEN - pos : len;
        memcpy(dst, pattern + pos, (size_t)piece);
        dst += piece;
        len -= piece;
        pos = 0;
    }
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct libxenvchan *connect_client(const struct options *o)
{
    double deadline = now() + o->wait_seconds;
    for (;;) {
        struct libxenvchan *v = libxenvchan_client_init(NULL, o->peer, o->path);
        if (v || now() >= deadline)
            return v;
        usleep(50000);
    }
}

/* Read exactly `len` bytes; 0 on success, -1 if the channel closed first. */
static int read_exact(struct libxenvchan *v, unsigned char *dst, long len)
{
    while (len > 0) {
        int got = libxenvchan_read(v, dst, len > CHUNK ? CHUNK : (size_t)len);
        if (got <= 0)
            return -1;
        dst += got;
        len -= got;
    }
    return 0;
}

static void run_echo(struct libxenvchan *v, struct result *r)
{
    double start = 0;
    for (;;) {
        int got = libxenvchan_read(v, chunk, CHUNK);
        if (got <= 0)
            break; /* the peer closed: the normal end of an echo */
        if (start == 0)
            start = now();
        if (libxenvchan_write(v, chunk, (size_t)got) != got) {
            r->error = "echo write failed";
            return;
        }
        r->bytes += got;
    }
    r->seconds = start ? now() - start : 0;
    r->ok = 1;
}

static void run_source(struct libxenvchan *v, long total, struct result *r)
{
    double start = now();
    while (r->bytes < total) {
        long len = total - r->bytes > CHUNK ? CHUNK : total - r->bytes;
        pattern_at(chunk, r->bytes, len);
        if (libxenvchan_write(v, chunk, (size_t)len) != len) {
            r->error = "source write failed (peer closed?)";
            return;
        }
        r->bytes += len;
    }
    r->seconds = now() - start;
    r->ok = 1;
}

static void run_sink(struct libxenvchan *v, long total, struct result *r)
{
    static unsigned char expected[CHUNK];
    double start = 0;
    while (r->bytes < total) {
        long want = total - r->bytes > CHUNK ? CHUNK : total - r->bytes;
        int got = libxenvchan_read(v, chunk, (size_t)want);
        if (got <= 0) {
            r->error = "channel closed before all bytes arrived";
            return;
        }
        if (start == 0)
            start = now();
        pattern_at(expected, r->bytes, got);
        if (memcmp(chunk, expected, (size_t)got) != 0) {
            r->error = "received bytes differ from the test pattern";
            return;
        }
        r->bytes += got;
    }
    r->seconds = now() - start;
    r->ok = 1;
}

static void run_ping(struct libxenvchan *v, long rounds, long size, struct result *r)
{
    static unsigned char back[CHUNK];
    if (size < 1 || size > CHUNK) {
        r->error = "ping size must be 1..65536";
        return;
    }
    pattern_at(chunk, 0, size);
    double start = now();
    for (long i = 0; i < rounds; i++) {
        if (libxenvchan_write(v, chunk, (size_t)size) != size || read_exact(v, back, size)) {
            r->error = "ping peer closed";
            return;
        }
        if (memcmp(back, chunk, (size_t)size) != 0) {
            r->error = "ping reply differs from the request";
            return;
        }
        r->bytes += 2 * size;
    }
    r->seconds = now() - start;
    r->rtt_us = rounds ? r->seconds * 1e6 / (double)rounds : 0;
    r->ok = 1;
}

static void report(const struct options *o, const struct result *r)
{
    char line[512];
    snprintf(line, sizeof line,
             "{\"role\": \"%s\", \"mode\": \"%s\", \"bytes\": %ld, \"seconds\": %.6f, "
             "\"rtt_us\": %.1f, \"ok\": %s, \"error\": \"%s\"}",
             o->server ? "server" : "client", o->mode, r->bytes, r->seconds, r->rtt_us,
             r->ok ? "true" : "false", r->error ? r->error : "");
    puts(line);
    fflush(stdout);
    if (!o->report_key)
        return;
    struct xs_handle *xs = xs_open(0);
    if (!xs || !xs_write(xs, XBT_NULL, o->report_key, line, strlen(line)))
        fprintf(stderr, "vchan-peer: cannot write result to %s: %s\n", o->report_key,
                strerror(errno));
    if (xs)
        xs_close(xs);
}

static int usage(void)
{
    fputs("usage: vchan-peer [-r KEY] [-s MINSIZE] [-w SECONDS] server|client DOMID PATH "
          "echo | source N | sink N | ping N SIZE\n",
          stderr);
    return 2;
}

static int parse(int argc, char **argv, struct options *o)
{
    int c;
    while ((c = getopt(argc, argv, "r:s:w:")) != -1) {
        switch (c) {
        case 'r': o->report_key = optarg; break;
        case 's': o->min_size = strtoul(optarg, NULL, 0); break;
        case 'w': o->wait_seconds = strtod(optarg, NULL); break;
        default: return -1;
        }
    }
    argv += optind;
    argc -= optind;
    if (argc < 4)
        return -1;
    if (strcmp(argv[0], "server") && strcmp(argv[0], "client"))
        return -1;
    o->server = !strcmp(argv[0], "server");
    o->peer = atoi(argv[1]);
    o->path = argv[2];
    o->mode = argv[3];
    o->count = argc > 4 ? atol(argv[4]) : 0;
    o->size = argc > 5 ? atol(argv[5]) : 1;
    int needs = !strcmp(o->mode, "echo") ? 4 : !strcmp(o->mode, "ping") ? 6 : 5;
    int known = !strcmp(o->mode, "echo") || !strcmp(o->mode, "source") ||
                !strcmp(o->mode, "sink") || !strcmp(o->mode, "ping");
    return known && argc == needs ? 0 : -1;
}

int main(int argc, char **argv)
{
    struct options o = { .wait_seconds = 0 };
    struct result r = { 0 };
    if (parse(argc, argv, &o))
        return usage();
    make_pattern();

    struct libxenvchan *v = o.server
        ? libxenvchan_server_init(NULL, o.peer, o.path, o.min_size, o.min_size)
        : connect_client(&o);
    if (!v) {
        fprintf(stderr, "vchan-peer: %s init on %s failed: %s\n",
                o.server ? "server" : "client", o.path, strerror(errno));
        r.error = "init failed";
        report(&o, &r);
        return 1;
    }
    v->blocking = 1; /* libxenvchan leaves it uninitialised */
    /* Time the transfer, not the wait for a client: it kicks us when it connects. */
    while (o.server && libxenvchan_is_open(v) == 2)
        if (libxenvchan_wait(v))
            break;

    if (!strcmp(o.mode, "echo"))
        run_echo(v, &r);
    else if (!strcmp(o.mode, "source"))
        run_source(v, o.count, &r);
    else if (!strcmp(o.mode, "sink"))
        run_sink(v, o.count, &r);
    else
        run_ping(v, o.count, o.size, &r);

    libxenvchan_close(v);
    report(&o, &r);
    if (!r.ok)
        fprintf(stderr, "vchan-peer: %s\n", r.error);
    return r.ok ? 0 : 1;
}
