/*
 * vchan-bench: one benchmark endpoint on Debian's real libxenvchan, driven line by line.
 *
 * `vchansim bench` runs two of these (through `vchansim exec`, one per emulated domain)
 * to measure the C library on the emulator in the same run as the Python transports; the
 * Python endpoint (vchansim/bench/worker.py) speaks the same protocol, so the runner
 * drives every transport alike.
 *
 * Usage: vchan-bench PEER_DOMID
 *
 * Commands, one per line on standard input; one reply line each on standard output,
 * "ok ..." or "error CAUSE".  Times are CLOCK_MONOTONIC seconds, comparable across
 * processes.  Data always flows client -> server for the throughput commands.
 *
 *   open server PATH RING  libxenvchan_server_init(PEER, PATH, RING, RING);
 *                          reply "ok SECONDS RING_BYTES PORT": the init call's duration,
 *                          the size of the client -> server ring, the local event port
 *   open client PATH       libxenvchan_client_init(PEER, PATH); same reply
 *   send MODE TOTAL MSG    write TOTAL bytes in MSG-byte calls; MODE stream
 *                          (libxenvchan_write) or packet (libxenvchan_send); reply
 *                          "ok START END CPU": the times around the whole transfer and the
 *                          CPU seconds (user + system) it took
 *   recv MODE TOTAL MSG    read TOTAL bytes: stream reads ask for up to max(MSG, 64 KiB)
 *                          (libxenvchan_read), packets are MSG bytes (libxenvchan_recv);
 *                          reply "ok START END CPU"
 *   ping COUNT             COUNT round trips of one byte (write, then read the echo);
 *                          reply "ok P50 P99" over all but the first COUNT/10 (warm-up)
 *   pong COUNT             echo COUNT single bytes; reply "ok"
 *   close                  libxenvchan_close; reply "ok"
 *   rss                    reply "ok BYTES": this process's peak resident set (VmHWM)
 *   quit                   exit (so does end of input)
 *
 * The channel is blocking (ctrl->blocking = 1): every call sleeps on the event channel
 * when the ring is full or empty, which is how the library is normally used.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <libxenvchan.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define MAX_MSG (1 << 20)
#define STREAM_READ (64 * 1024)

static struct libxenvchan *ctrl;
static int peer;
static unsigned char *buffer; /* MAX_MSG bytes, for both directions */

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds (user + system) this process has used so far. */
static double cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void reply_error(const char *what)
{
    printf("error %s: %s\n", what, errno ? strerror(errno) : "failed");
}

static int client_to_server_ring(void)
{
    return 1 << (ctrl->is_server ? ctrl->read.order : ctrl->write.order);
}

static void cmd_open(char *role, char *path, char *ring)
{
    double start;

    if (ctrl) {
        printf("error a channel is already open\n");
        return;
    }
    errno = 0;
    start = now();
    if (!strcmp(role, "server") && ring)
        ctrl = libxenvchan_server_init(NULL, peer, path, strtoul(ring, NULL, 0),
                                       strtoul(ring, NULL, 0));
    else if (!strcmp(role, "client"))
        ctrl = libxenvchan_client_init(NULL, peer, path);
    else {
        printf("error open needs server PATH RING or client PATH\n");
        return;
    }
    if (!ctrl) {
        reply_error("init");
        return;
    }
    ctrl->blocking = 1;
    printf("ok %.9f %d %u\n", now() - start, client_to_server_ring(), ctrl->event_port);
}

/* Move TOTAL bytes in calls of MSG (sending) or up to `chunk` (receiving). */
static int transfer(int sending, int packet, unsigned long long total, size_t msg)
{
    size_t chunk = sending || packet ? msg : (msg > STREAM_READ ? msg : STREAM_READ);

    for (unsigned long long done = 0; done < total;) {
        size_t want = total - done < chunk ? (size_t)(total - done) : chunk;
        int n;

        if (sending)
            n = packet ? libxenvchan_send(ctrl, buffer, want)
                       : libxenvchan_write(ctrl, buffer, want);
        else
            n = packet ? libxenvchan_recv(ctrl, buffer, want)
                       : libxenvchan_read(ctrl, buffer, want);
        if (n <= 0)
            return -1;
        done += (unsigned long long)n;
    }
    return 0;
}

static void cmd_move(int sending, char *mode, char *total, char *msg)
{
    unsigned long long bytes = strtoull(total, NULL, 0);
    size_t size = strtoul(msg, NULL, 0);
    int packet = !strcmp(mode, "packet");
    double start, cpu;

    if (!ctrl || size == 0 || size > MAX_MSG || (!packet && strcmp(mode, "stream"))) {
        printf("error %s needs an open channel, stream|packet, and 1..%d-byte messages\n",
               sending ? "send" : "recv", MAX_MSG);
        return;
    }
    errno = 0;
    cpu = cpu_seconds();
    start = now();
    if (transfer(sending, packet, bytes, size) < 0) {
        reply_error(sending ? "send" : "recv");
        return;
    }
    printf("ok %.9f %.9f %.6f\n", start, now(), cpu_seconds() - cpu);
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static void cmd_ping(long count)
{
    long warm = count / 10, kept = count - warm;
    double *samples = malloc(sizeof(double) * (size_t)(kept > 0 ? kept : 1));
    unsigned char byte = 1;

    if (!ctrl || count < 2 || !samples) {
        printf("error ping needs an open channel and COUNT >= 2\n");
        free(samples);
        return;
    }
    errno = 0;
    for (long i = 0; i < count; i++) {
        double start = now();

        if (libxenvchan_write(ctrl, &byte, 1) != 1 || libxenvchan_read(ctrl, &byte, 1) != 1) {
            reply_error("ping");
            free(samples);
            return;
        }
        if (i >= warm)
            samples[i - warm] = now() - start;
    }
    qsort(samples, (size_t)kept, sizeof(double), compare_doubles);
    printf("ok %.9f %.9f\n", samples[kept / 2], samples[kept * 99 / 100]);
    free(samples);
}

static void cmd_pong(long count)
{
    unsigned char byte;

    errno = 0;
    for (long i = 0; i < count; i++) {
        if (!ctrl || libxenvchan_read(ctrl, &byte, 1) != 1 ||
            libxenvchan_write(ctrl, &byte, 1) != 1) {
            reply_error("pong");
            return;
        }
    }
    printf("ok\n");
}

static void cmd_rss(void)
{
    char line[256];
    FILE *status = fopen("/proc/self/status", "r");
    long kib = -1;

    while (status && fgets(line, sizeof(line), status))
        if (sscanf(line, "VmHWM: %ld", &kib) == 1)
            break;
    if (status)
        fclose(status);
    if (kib < 0)
        printf("error no VmHWM in /proc/self/status\n");
    else
        printf("ok %ld\n", kib * 1024);
}

/* Run one command line; return 0 to stop. */
static int dispatch(char *line)
{
    char *word[5] = {0};
    int n = 0;

    for (char *tok = strtok(line, " \t\n"); tok && n < 5; tok = strtok(NULL, " \t\n"))
        word[n++] = tok;
    if (n == 0)
        printf("error empty command\n");
    else if (!strcmp(word[0], "quit"))
        return 0;
    else if (!strcmp(word[0], "open") && n >= 3)
        cmd_open(word[1], word[2], word[3]);
    else if ((!strcmp(word[0], "send") || !strcmp(word[0], "recv")) && n == 4)
        cmd_move(word[0][0] == 's', word[1], word[2], word[3]);
    else if (!strcmp(word[0], "ping") && n == 2)
        cmd_ping(strtol(word[1], NULL, 0));
    else if (!strcmp(word[0], "pong") && n == 2)
        cmd_pong(strtol(word[1], NULL, 0));
    else if (!strcmp(word[0], "close") && n == 1) {
        if (ctrl)
            libxenvchan_close(ctrl);
        ctrl = NULL;
        printf("ok\n");
    } else if (!strcmp(word[0], "rss") && n == 1)
        cmd_rss();
    else
        printf("error unknown command or wrong arguments: %s\n", word[0]);
    fflush(stdout);
    return 1;
}

int main(int argc, char **argv)
{
    char line[4096];
    char *end;

    if (argc != 2 || (peer = (int)strtol(argv[1], &end, 10)) < 0 || *end) {
        fprintf(stderr, "usage: vchan-bench PEER_DOMID (commands on stdin)\n");
        return 1;
    }
    buffer = calloc(1, MAX_MSG);
    if (!buffer) {
        perror("vchan-bench");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    while (fgets(line, sizeof(line), stdin) && dispatch(line))
        ;
    if (ctrl)
        libxenvchan_close(ctrl);
    free(buffer);
    return 0;
}
