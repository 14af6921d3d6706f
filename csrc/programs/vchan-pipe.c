/*
 * vchan-pipe: move bytes over one vchan with the real libxenvchan and print their SHA-256,
 * so two runs (C or Python, either role) can check each other's data.
 *
 * Usage:
 *   vchan-pipe ROLE DOMID PATH [--send N] [--recv N] [--packet SIZE]
 *              [--read-min N] [--write-min N] [--seed N] [--hold] [--wait-go]
 *              [--no-digest]
 *
 *   ROLE          server (libxenvchan_server_init) or client (libxenvchan_client_init)
 *   DOMID         the PEER's domain id, as libxenvchan takes it
 *   PATH          the channel's xenstore path
 *   --send N      send N bytes of pseudo-random data (default 0)
 *   --recv N      receive N bytes (default 0); sending and receiving run concurrently,
 *                 so N may exceed the ring sizes in both directions at once
 *   --packet SIZE packet mode: libxenvchan_send/recv of SIZE-byte messages (the last one
 *                 shorter); both peers must use the same SIZE.  Default: stream mode
 *                 (libxenvchan_write/read, any split)
 *   --read-min N  server: minimum size of the ring it reads (client -> server)
 *   --write-min N server: minimum size of the ring it writes (server -> client)
 *   --seed N      seed of the sent data (default 1 for the server, 2 for the client): the
 *                 data are the little-endian 64-bit outputs of xorshift64 (x ^= x << 13;
 *                 x ^= x >> 7; x ^= x << 17; starting from x = seed, which must not be 0),
 *                 cut to N bytes
 *   --hold        when done, stay connected until the peer closes (or dies)
 *   --wait-go     after "ready", wait for a line on standard input before moving data
 *                 (lets a test line up both ends, or change the world, first)
 *   --no-digest   skip hashing (prints "-" for the SHA-256): to time the channel itself,
 *                 which moves data faster than this program's portable SHA-256 runs
 *
 * Output on stdout, one flushed line per event:
 *   ready                       the init call succeeded (the server is now listening)
 *   sent N SHA256HEX SECONDS    all N bytes went into the ring; time from first to last
 *   received N SHA256HEX SECONDS
 *   closed                      the peer closed the channel (or died)
 *
 * Exit status: 0 done, 1 usage, 2 init failed, 3 the peer closed before all bytes moved,
 * 4 an I/O or event-channel error.
 *
 * The program uses non-blocking libxenvchan calls driven by poll() on
 * libxenvchan_fd_for_select(), the way event-loop programs such as vchan-socket-proxy do.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <libxenvchan.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- SHA-256 (FIPS 180-4) */

struct sha256 {
    uint32_t h[8];
    uint64_t length;
    unsigned char block[64];
    size_t used;
};

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
};

static uint32_t ror(uint32_t x, unsigned n)
{
    return (x >> n) | (x << (32 - n));
}

static void sha256_init(struct sha256 *s)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

    memcpy(s->h, h0, sizeof(h0));
    s->length = 0;
    s->used = 0;
}

#define SHA_ROUND(a, b, c, d, e, f, g, h, i)                                                \
    do {                                                                                    \
        uint32_t t1 = h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) +   \
                      sha256_k[i] + w[i];                                                   \
        d += t1;                                                                            \
        h = t1 + (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));     \
    } while (0)

static void sha256_block(struct sha256 *s, const unsigned char *p)
{
    uint32_t w[64];
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    uint32_t e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];

    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);

        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    /* Eight rounds per pass, renaming the working variables instead of shifting them. */
    for (int i = 0; i < 64; i += 8) {
        SHA_ROUND(a, b, c, d, e, f, g, h, i);
        SHA_ROUND(h, a, b, c, d, e, f, g, i + 1);
        SHA_ROUND(g, h, a, b, c, d, e, f, i + 2);
        SHA_ROUND(f, g, h, a, b, c, d, e, i + 3);
        SHA_ROUND(e, f, g, h, a, b, c, d, i + 4);
        SHA_ROUND(d, e, f, g, h, a, b, c, i + 5);
        SHA_ROUND(c, d, e, f, g, h, a, b, i + 6);
        SHA_ROUND(b, c, d, e, f, g, h, a, i + 7);
    }
    s->h[0] += a;
    s->h[1] += b;
    s->h[2] += c;
    s->h[3] += d;
    s->h[4] += e;
    s->h[5] += f;
    s->h[6] += g;
    s->h[7] += h;
}

static void sha256_update(struct sha256 *s, const unsigned char *p, size_t n)
{
    s->length += n;
    while (n > 0) {
        size_t take = 64 - s->used < n ? 64 - s->used : n;

        if (s->used == 0 && n >= 64) {
            sha256_block(s, p);
            take = 64;
        } else {
            memcpy(s->block + s->used, p, take);
            s->used += take;
            if (s->used == 64) {
                sha256_block(s, s->block);
                s->used = 0;
            }
        }
        p += take;
        n -= take;
    }
}

static void sha256_hex(struct sha256 *s, char out[65])
{
    uint64_t bits = s->length * 8;
    unsigned char pad[72] = {0x80};
    size_t padlen = (s->used < 56 ? 56 : 120) - s->used;

    for (int i = 0; i < 8; i++)
        pad[padlen + i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_update(s, pad, padlen + 8);
    for (int i = 0; i < 8; i++)
        sprintf(out + 8 * i, "%08x", s->h[i]);
}

/* ---------------------------------------------------------------- transfers */

#define CHUNK 65536

enum { EXIT_USAGE = 1, EXIT_INIT = 2, EXIT_CLOSED = 3, EXIT_IO = 4 };

struct options {
    int server;
    int domid;
    const char *path;
    unsigned long long send, recv;
    size_t packet; /* 0: stream mode */
    size_t read_min, write_min;
    uint64_t seed;
    int hold;
    int wait_go;
    int digest;
};

/* One direction's progress: bytes moved, their hash, time of first and last byte. */
struct flow {
    unsigned long long total, done;
    int digest;
    struct sha256 hash;
    struct timespec first, last;
};

struct sender {
    struct flow flow;
    uint64_t state;              /* xorshift64 generator */
    unsigned char word[8];       /* its current output word, little-endian */
    size_t used;                 /* bytes of `word` already handed out */
    unsigned char buf[CHUNK];
    size_t len, off;             /* generated bytes in buf, and how many are sent */
};

/* Account for n bytes at p having moved. */
static void stamp(struct flow *f, const unsigned char *p, size_t n)
{
    if (f->digest)
        sha256_update(&f->hash, p, n);
    if (f->done == 0)
        clock_gettime(CLOCK_MONOTONIC, &f->first);
    clock_gettime(CLOCK_MONOTONIC, &f->last);
    f->done += n;
}

static void report(const char *what, struct flow *f)
{
    char hex[65];
    double secs = (double)(f->last.tv_sec - f->first.tv_sec) +
                  (double)(f->last.tv_nsec - f->first.tv_nsec) / 1e9;

    if (f->digest)
        sha256_hex(&f->hash, hex);
    else
        strcpy(hex, "-");
    printf("%s %llu %s %.6f\n", what, f->done, hex, secs);
    fflush(stdout);
}

static uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* Refill the send buffer with the next block of the stream (one packet in packet mode). */
static void generate(struct sender *s, size_t packet)
{
    unsigned long long left = s->flow.total - s->flow.done;
    size_t want = packet ? packet : CHUNK;
    size_t i = 0;

    s->len = left < want ? (size_t)left : want;
    s->off = 0;
    while (i < s->len && s->used < sizeof(s->word)) /* the rest of a word cut last time */
        s->buf[i++] = s->word[s->used++];
    for (; i + 8 <= s->len; i += 8) {
        uint64_t le = htole64(xorshift64(&s->state));

        memcpy(s->buf + i, &le, 8);
    }
    if (i < s->len) {
        uint64_t le = htole64(xorshift64(&s->state));

        memcpy(s->word, &le, 8);
        for (s->used = 0; i < s->len;)
            s->buf[i++] = s->word[s->used++];
    }
}

/* Returns bytes moved (0: ring full), or -1 when the peer has closed. */
static int pump_send(struct libxenvchan *ctrl, struct sender *s, size_t packet)
{
    int n;

    if (s->off == s->len)
        generate(s, packet);
    if (packet)
        n = libxenvchan_send(ctrl, s->buf, s->len);
    else
        n = libxenvchan_write(ctrl, s->buf + s->off, s->len - s->off);
    if (n > 0) {
        stamp(&s->flow, s->buf + s->off, (size_t)n);
        s->off += (size_t)n;
    }
    return n;
}

/* Returns bytes moved (0: nothing there yet), or -1 when the peer has closed. */
static int pump_recv(struct libxenvchan *ctrl, struct flow *f, size_t packet)
{
    static unsigned char buf[CHUNK];
    unsigned long long left = f->total - f->done;
    size_t want = packet ? packet : sizeof(buf);
    int n;

    if (left < want)
        want = (size_t)left;
    n = packet ? libxenvchan_recv(ctrl, buf, want) : libxenvchan_read(ctrl, buf, want);
    /* The peer may have written its last bytes between our empty check and its close. */
    if (n < 0 && libxenvchan_data_ready(ctrl) >= (int)(packet ? want : 1))
        n = packet ? libxenvchan_recv(ctrl, buf, want) : libxenvchan_read(ctrl, buf, want);
    if (n > 0)
        stamp(f, buf, (size_t)n);
    return n;
}

static int sleep_for_event(struct libxenvchan *ctrl)
{
    struct pollfd pfd = {.fd = libxenvchan_fd_for_select(ctrl), .events = POLLIN};

    if (poll(&pfd, 1, -1) < 0 && errno != EINTR) {
        perror("vchan-pipe: poll");
        return -1;
    }
    if (libxenvchan_wait(ctrl) < 0) {
        perror("vchan-pipe: libxenvchan_wait");
        return -1;
    }
    return 0;
}

static int run(struct libxenvchan *ctrl, const struct options *o)
{
    static struct sender out;
    struct flow in = {.total = o->recv, .digest = o->digest};

    out.flow.total = o->send;
    out.flow.digest = o->digest;
    out.state = o->seed;
    out.used = sizeof(out.word);
    sha256_init(&out.flow.hash);
    sha256_init(&in.hash);
    for (int reported_out = 0, reported_in = 0;;) {
        int progress = 0, closed = 0, n;

        if (out.flow.done < out.flow.total) {
            n = pump_send(ctrl, &out, o->packet);
            closed |= n < 0;
            progress |= n > 0;
        }
        if (in.done < in.total) {
            n = pump_recv(ctrl, &in, o->packet);
            closed |= n < 0;
            progress |= n > 0;
        }
        if (!reported_out && out.flow.done == out.flow.total && o->send) {
            report("sent", &out.flow);
            reported_out = 1;
        }
        if (!reported_in && in.done == in.total && o->recv) {
            report("received", &in);
            reported_in = 1;
        }
        int finished = out.flow.done == out.flow.total && in.done == in.total;

        if (finished && !o->hold)
            return 0;
        /* Once the peer is gone its data is all in the ring: stop when that is read. */
        if (closed || (!progress && !libxenvchan_is_open(ctrl) &&
                       (in.done == in.total || libxenvchan_data_ready(ctrl) == 0))) {
            printf("closed\n");
            fflush(stdout);
            return finished ? 0 : EXIT_CLOSED;
        }
        if (!progress && sleep_for_event(ctrl) < 0)
            return EXIT_IO;
    }
}

static int parse_size(const char *text, unsigned long long *out)
{
    char *end;

    errno = 0;
    *out = strtoull(text, &end, 0);
    return errno || *end || !*text || text[0] == '-' ? -1 : 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: vchan-pipe server|client DOMID PATH [--send N] [--recv N] "
                    "[--packet SIZE] [--read-min N] [--write-min N] [--seed N] [--hold] "
                    "[--wait-go] [--no-digest]\n");
    return EXIT_USAGE;
}

static int parse_args(int argc, char **argv, struct options *o)
{
    unsigned long long v;

    if (argc < 4 || (strcmp(argv[1], "server") && strcmp(argv[1], "client")))
        return -1;
    o->server = !strcmp(argv[1], "server");
    if (parse_size(argv[2], &v) < 0 || v > 0x7FEF)
        return -1;
    o->domid = (int)v;
    o->path = argv[3];
    o->seed = o->server ? 1 : 2;
    o->digest = 1;
    for (int i = 4; i < argc; i++) {
        const char *opt = argv[i];

        if (!strcmp(opt, "--hold")) {
            o->hold = 1;
            continue;
        }
        if (!strcmp(opt, "--wait-go")) {
            o->wait_go = 1;
            continue;
        }
        if (!strcmp(opt, "--no-digest")) {
            o->digest = 0;
            continue;
        }
        if (i + 1 >= argc || parse_size(argv[++i], &v) < 0)
            return -1;
        if (!strcmp(opt, "--send"))
            o->send = v;
        else if (!strcmp(opt, "--recv"))
            o->recv = v;
        else if (!strcmp(opt, "--packet") && v > 0 && v <= CHUNK)
            o->packet = (size_t)v;
        else if (!strcmp(opt, "--read-min"))
            o->read_min = (size_t)v;
        else if (!strcmp(opt, "--write-min"))
            o->write_min = (size_t)v;
        else if (!strcmp(opt, "--seed") && v != 0) /* 0 is xorshift's fixed point */
            o->seed = v;
        else
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o = {0};
    struct libxenvchan *ctrl;
    int rc;

    if (parse_args(argc, argv, &o) < 0)
        return usage();
    if (o.server)
        ctrl = libxenvchan_server_init(NULL, o.domid, o.path, o.read_min, o.write_min);
    else
        ctrl = libxenvchan_client_init(NULL, o.domid, o.path);
    if (!ctrl) {
        fprintf(stderr, "vchan-pipe: %s init failed: %s\n", argv[1], strerror(errno));
        return EXIT_INIT;
    }
    ctrl->blocking = 0;
    printf("ready\n");
    fflush(stdout);
    if (o.wait_go) {
        char line[16];

        if (!fgets(line, sizeof(line), stdin)) {
            fprintf(stderr, "vchan-pipe: standard input closed before the go\n");
            libxenvchan_close(ctrl);
            return EXIT_USAGE;
        }
    }
    rc = run(ctrl, &o);
    libxenvchan_close(ctrl);
    return rc;
}
