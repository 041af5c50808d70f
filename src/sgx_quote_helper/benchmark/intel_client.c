/* The native Intel-pattern load generator (``bench quote --client intel --loadgen native``).
 *
 * Every call is the one sgx_quote_helper.benchmark.intel.transact makes (Intel's libsgx_quote_ex
 * SocketTransporter::transact over a NonBlockingUnixCommunicationSocket), system call for system
 * call: epoll_create, the cancel pipe, epoll_ctl(ADD, pipe, IN|ET), socket, a blocking connect,
 * epoll_ctl(ADD, sock, ET), fcntl(F_GETFL)/fcntl(F_SETFL, |O_NONBLOCK); writeRaw of the 4-byte
 * length, then of the body (epoll_ctl(MOD, ET) twice per successful writeRaw); readRaw(4)
 * and readRaw(length): epoll_ctl(MOD, IN|ET), a direct read of the whole length, epoll_wait when it
 * is not all there, partialRead in reads of at most 512 bytes, epoll_ctl(MOD, ET); then close of the
 * epoll fd, both pipe ends, the socket. (The length prefix is a little-endian uint32, Intel's
 * native uint32 on x86: this program writes the prefix bytes Python gives it and reads the reply's
 * as little-endian.) Each readRaw/writeRaw restarts a 15 s clock.
 *
 * Many such calls share this one process as they do the Python generator's: where Intel's client
 * blocks in epoll_wait on its call's epoll fd, this program waits for that fd to become readable in
 * its own (master) epoll, then calls epoll_wait on the call's fd with timeout 0.
 *
 * It knows nothing of the AESM protobuf messages: the request bodies and what a correct reply looks
 * like (its exact length and the bytes it starts with, errorCode included) come from Python in the
 * calls file. A request is the sequence of calls in that file, made one after the other.
 *
 * Usage: intel_client SOCKET CALLS_FILE CLIENTS DURATION_S WARMUP_S GRACE_S REQUESTS BAD_DUMP
 *   REQUESTS: 0 = run for DURATION_S; N = stop after N measured requests.
 *   BAD_DUMP: a file to write the first wrong reply to (the call's index, u32, then its body), or "-".
 * It reads one line from stdin ("go") before it starts. Every 0.25 s it prints
 * "progress OK ERRORS" on stdout; at the end one JSON object on one line. Exit status 0, or 2 on
 * bad arguments or a run that could not start.
 *
 * calls file (its own u32s big-endian): count, then per call: the 4-byte frame prefix, body_len,
 * body, expect_len, prefix_len, prefix.
 *
 * C99 with Linux headers only. Part of sgx-quote-helper; compiled on demand by benchmark/native.py.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define IPC_LATENCY_MS 15000
#define MAX_EVENTS 12
#define PARTIAL_READ_CHUNK 512
#define MAX_REPLY (1u << 20)
#define PROGRESS_NS 250000000LL
#define NEVER INT64_MAX

enum label { L_OK, L_TIMEOUT, L_UNAVAILABLE, L_TRANSPORT, L_BAD_LENGTH, L_BAD_RESPONSE, L_COUNT };
static const char *LABELS[L_COUNT] = {"ok", "timeout", "unavailable", "transport", "bad_length",
                                      "bad_response"};

typedef struct {
    uint8_t head[4]; /* the frame's length prefix, as Python's wire.framing writes it */
    uint8_t *body;
    uint32_t body_len;
    uint32_t expect_len;
    uint8_t *prefix;
    uint32_t prefix_len;
} CallSpec;

/* where a call is: the operation it waits in */
enum op { OP_WRITE_HEAD, OP_WRITE_BODY, OP_READ_HEAD, OP_READ_BODY };

typedef struct {
    int ep, pr, pw, sock; /* -1 once closed */
    int busy;             /* a call is in progress */
    int step;             /* which call of the sequence */
    enum op op;
    /* writeRaw */
    const uint8_t *wdata;
    uint32_t wlen, wtotal;
    int last_ok, werror;
    /* readRaw */
    uint8_t head[8]; /* the direct read asks for the whole length on every pass: room for 2x */
    uint8_t *buf;    /* 2 * length bytes, same reason */
    uint32_t length, got;
    int rerror;
    int64_t mark;     /* MarkStartTime of the current readRaw/writeRaw */
    int64_t deadline; /* while waiting: when Intel's epoll_wait would time out */
    int64_t t0;       /* the request's start */
    int registered;   /* the epoll fd registered in the master epoll (fd number) */
} Slot;

static CallSpec *calls;
static uint32_t ncalls;
static const char *sock_path;
static int master = -1;
static Slot *slots;
static int nslots, active;
static int64_t measure_ns, end_ns, last_ns;
static uint64_t quota, measured;
static int stopping;
static uint64_t counts[L_COUNT];
static uint64_t calls_in_window;
static const char *bad_dump;
static int bad_dumped;

/* latency histogram (ns): exact below 128, then 64 sub-buckets per power of two (<= 1.6 % wide) */
#define HBUCKETS (128 + 64 * 58)
static uint64_t hist[HBUCKETS];
static uint64_t hcount, hsum;
static int64_t hmin = NEVER, hmax;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int hbucket(uint64_t v) {
    if (v < 128) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 6;
    int idx = 128 + (shift - 1) * 64 + (int)((v >> shift) - 64);
    return idx < HBUCKETS ? idx : HBUCKETS - 1;
}

static double hvalue(int idx) { /* the middle of the bucket */
    if (idx < 128) return idx;
    int shift = (idx - 128) / 64 + 1;
    double lo = (double)(((uint64_t)((idx - 128) % 64 + 64)) << shift);
    return lo + ((double)(1ULL << shift) - 1) / 2;
}

static void hadd(int64_t ns) {
    if (ns < 0) ns = 0;
    hist[hbucket((uint64_t)ns)]++;
    hcount++;
    hsum += (uint64_t)ns;
    if (ns < hmin) hmin = ns;
    if (ns > hmax) hmax = ns;
}

static double hpercentile(double fraction) { /* nearest rank, as benchmark.timing.percentile */
    if (!hcount) return 0;
    int64_t rank = (int64_t)(fraction * (double)hcount + 0.5) - 1;
    if (rank < 0) rank = 0;
    if ((uint64_t)rank > hcount - 1) rank = (int64_t)hcount - 1;
    uint64_t seen = 0;
    for (int i = 0; i < HBUCKETS; i++) {
        seen += hist[i];
        if (seen > (uint64_t)rank) {
            double v = hvalue(i);
            if (v < (double)hmin) v = (double)hmin;
            if (v > (double)hmax) v = (double)hmax;
            return v;
        }
    }
    return (double)hmax;
}

/* ---- one call: Intel's NonBlockingUnixCommunicationSocket ------------------------------------ */

static int timed_out(Slot *s) { return now_ns() - s->mark >= (int64_t)IPC_LATENCY_MS * 1000000LL; }

static void mod(Slot *s, uint32_t events) {
    struct epoll_event ev = {.events = events, .data = {.fd = s->sock}};
    epoll_ctl(s->ep, EPOLL_CTL_MOD, s->sock, &ev);
}

static void disconnect(Slot *s) {
    if (s->sock >= 0) {
        close(s->sock);
        s->sock = -1;
    }
}

static void delete_socket(Slot *s) { /* ~NonBlockingUnixCommunicationSocket, ~UnixCommunicationSocket */
    if (s->ep >= 0) {
        close(s->ep);
        s->ep = -1;
    }
    if (s->pr >= 0) {
        close(s->pr);
        close(s->pw);
        s->pr = s->pw = -1;
    }
    disconnect(s);
    free(s->buf);
    s->buf = NULL;
    s->registered = -1;
    s->deadline = NEVER;
    s->busy = 0;
}

/* init; 0, or L_UNAVAILABLE (connect failed) / L_TRANSPORT */
static int init_socket(Slot *s) {
    s->ep = epoll_create1(EPOLL_CLOEXEC);
    int p[2];
    if (s->ep < 0 || pipe2(p, O_CLOEXEC) != 0) return L_TRANSPORT;
    s->pr = p[0];
    s->pw = p[1];
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data = {.fd = s->pr}};
    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->pr, &ev);
    s->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->sock < 0) return L_TRANSPORT;
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strncpy(addr.sun_path, sock_path, sizeof addr.sun_path - 1);
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(addr.sun_path) + 1);
    if (connect(s->sock, (struct sockaddr *)&addr, alen) != 0) return L_UNAVAILABLE;
    ev.events = EPOLLET;
    ev.data.fd = s->sock;
    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->sock, &ev);
    int flags = fcntl(s->sock, F_GETFL);
    fcntl(s->sock, F_SETFL, flags | O_NONBLOCK);
    return 0;
}

/* results of the steps below */
#define WAIT (-1)
#define DONE (-2)

/* writeRaw, from its start (events == NULL, n == -1) or after a wait */
static int write_raw(Slot *s, struct epoll_event *events, int n) {
    if (n >= 0) { /* back from epoll_wait */
        int error = s->werror, cancelled = 0, closed = 0;
        for (int i = 0; i < n; i++) {
            if (timed_out(s) || error || cancelled || closed) break;
            uint32_t m = events[i].events;
            if (m & EPOLLHUP) {
                closed = 1;
                continue;
            }
            if ((m & EPOLLERR) || !(m & EPOLLOUT)) error = 1;
            else if (events[i].data.fd == s->pr) cancelled = 1;
        }
        int late = timed_out(s);
        if (error || cancelled || late || closed) {
            disconnect(s);
            return late ? L_TIMEOUT : L_TRANSPORT;
        }
    }
    for (;;) {
        s->werror = 0;
        ssize_t w = write(s->sock, s->wdata + s->wtotal, s->wlen - s->wtotal);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                s->last_ok = 0;
                mod(s, EPOLLET | EPOLLOUT);
            } else if (errno == EINTR && !timed_out(s)) {
                continue;
            } else {
                s->werror = 1;
            }
            return WAIT;
        }
        if (!s->last_ok) {
            s->last_ok = 1;
            mod(s, EPOLLET);
        }
        s->wtotal += (uint32_t)w;
        if (s->wtotal == s->wlen) break;
    }
    mod(s, EPOLLET);
    return DONE;
}

static void start_write(Slot *s, const uint8_t *data, uint32_t len) {
    s->wdata = data;
    s->wlen = len;
    s->wtotal = 0;
    s->last_ok = 0;
    s->werror = 0;
    s->mark = now_ns();
}

static uint8_t *rbuf(Slot *s) { return s->op == OP_READ_HEAD ? s->head : s->buf; }

/* partialRead: reads of at most 512 bytes until max_length, EAGAIN or EOF; -1 on error */
static int64_t partial_read(Slot *s, uint32_t max_length) {
    uint32_t chunk = max_length < PARTIAL_READ_CHUNK ? max_length : PARTIAL_READ_CHUNK;
    uint32_t got = 0;
    while (got < max_length) {
        uint32_t want = max_length - got < chunk ? max_length - got : chunk;
        ssize_t r = read(s->sock, rbuf(s) + s->got, want);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR && !timed_out(s)) continue;
            return -1;
        }
        s->got += (uint32_t)r;
        got += (uint32_t)r;
        if (r == 0) break;
    }
    return got;
}

/* readRaw, from its start (n == -1) or after a wait */
static int read_raw(Slot *s, struct epoll_event *events, int n) {
    if (n >= 0) {
        int error = s->rerror, cancelled = 0, closed = 0;
        for (int i = 0; i < n; i++) {
            if (timed_out(s) || error || cancelled || closed) break;
            uint32_t m = events[i].events;
            if (m & EPOLLHUP) closed = 1;
            if ((m & EPOLLERR) || !(m & EPOLLIN)) {
                error = 1;
            } else if (events[i].data.fd == s->pr) {
                cancelled = 1;
            } else {
                int64_t step = partial_read(s, s->length - s->got);
                if (step == -1 || (step == 0 && s->got != s->length)) error = 1;
            }
        }
        if (s->got != s->length) {
            int late = timed_out(s);
            if (error || cancelled || late) {
                disconnect(s);
                return late ? L_TIMEOUT : L_TRANSPORT;
            }
        }
        if (s->got >= s->length) goto done;
    }
    for (;;) { /* Intel's do { } while: a direct read of the whole length on every pass */
        s->rerror = 0;
        ssize_t r = read(s->sock, rbuf(s) + s->got, s->length);
        if (r > 0) {
            s->got += (uint32_t)r;
        } else if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            if (errno == EINTR && !timed_out(s)) continue;
            s->rerror = 1;
        }
        if (s->got >= s->length) goto done;
        return WAIT;
    }
done:
    if (s->sock >= 0) mod(s, EPOLLET);
    return DONE;
}

static void start_read(Slot *s, enum op op, uint32_t length) {
    s->op = op;
    s->length = length;
    s->got = 0;
    s->rerror = 0;
    mod(s, EPOLLIN | EPOLLET);
    s->mark = now_ns();
}

static void dump_bad(int step, const uint8_t *body, uint32_t len) {
    if (bad_dumped || !bad_dump || !strcmp(bad_dump, "-")) return;
    bad_dumped = 1;
    FILE *f = fopen(bad_dump, "wb");
    if (!f) return;
    uint8_t idx[4] = {(uint8_t)(step >> 24), (uint8_t)(step >> 16), (uint8_t)(step >> 8), (uint8_t)step};
    fwrite(idx, 1, 4, f);
    fwrite(body, 1, len, f);
    fclose(f);
}

/* drive the slot's call from where it stands; WAIT, or the call's label */
static int run_call(Slot *s, struct epoll_event *events, int n) {
    CallSpec *c = &calls[s->step];
    int r;
    for (;;) {
        switch (s->op) {
        case OP_WRITE_HEAD:
            r = write_raw(s, events, n);
            if (r != DONE) return r;
            s->op = OP_WRITE_BODY;
            start_write(s, c->body, c->body_len);
            n = -1;
            break;
        case OP_WRITE_BODY:
            r = write_raw(s, events, n);
            if (r != DONE) return r;
            start_read(s, OP_READ_HEAD, 4);
            n = -1;
            break;
        case OP_READ_HEAD: {
            r = read_raw(s, events, n);
            if (r != DONE) return r;
            /* the reply's length prefix: a uint32 in the host's order, as Intel's client reads
               it (little-endian on x86: wire.framing.HEADER is "<I") */
            uint32_t size = (uint32_t)s->head[0] | (uint32_t)s->head[1] << 8 |
                            (uint32_t)s->head[2] << 16 | (uint32_t)s->head[3] << 24;
            if (size > MAX_REPLY) return L_BAD_LENGTH; /* the protocol core refuses it too */
            s->buf = malloc(2 * (size_t)size + 1);
            if (!s->buf) return L_TRANSPORT;
            start_read(s, OP_READ_BODY, size);
            n = -1;
            break;
        }
        case OP_READ_BODY:
            r = read_raw(s, events, n);
            if (r != DONE) return r;
            if (s->length != c->expect_len || s->length < c->prefix_len ||
                memcmp(s->buf, c->prefix, c->prefix_len) != 0) {
                dump_bad(s->step, s->buf, s->length);
                return L_BAD_RESPONSE;
            }
            return L_OK;
        }
    }
}

static int begin_call(Slot *s) {
    CallSpec *c = &calls[s->step];
    s->busy = 1;
    s->registered = -1;
    s->deadline = NEVER;
    int r = init_socket(s);
    if (r) return r;
    s->op = OP_WRITE_HEAD;
    start_write(s, c->head, 4);
    return run_call(s, NULL, -1);
}

/* a finished request; 0 when the client stops */
static int record(int64_t t0, int64_t t1, int label) {
    if (t1 < measure_ns) return 1;
    if (t1 >= end_ns || stopping) return 0;
    hadd(t1 - t0);
    counts[label]++;
    measured++;
    last_ns = t1;
    if (quota && measured >= quota) {
        stopping = 1;
        return 0;
    }
    return 1;
}

/* resume the slot (n == -1: start a call) until it waits or the client stops */
static void advance(Slot *s, struct epoll_event *events, int n) {
    int r = n < 0 ? begin_call(s) : run_call(s, events, n);
    for (;;) {
        if (r == WAIT) {
            if (s->registered != s->ep) {
                struct epoll_event ev = {.events = EPOLLIN, .data = {.u32 = (uint32_t)(s - slots)}};
                epoll_ctl(master, EPOLL_CTL_ADD, s->ep, &ev);
                s->registered = s->ep;
            }
            s->deadline = now_ns() + (int64_t)IPC_LATENCY_MS * 1000000LL;
            return;
        }
        delete_socket(s);
        int64_t t1 = now_ns();
        if (t1 >= measure_ns && t1 < end_ns) calls_in_window++;
        if (r == L_OK && (uint32_t)s->step + 1 < ncalls) {
            s->step++;
        } else {
            active--;
            if (!record(s->t0, t1, r)) return;
            active++;
            s->t0 = t1;
            s->step = 0;
        }
        r = begin_call(s);
    }
}

/* ---- set-up and the loop ---------------------------------------------------------------------- */

static int rd32(FILE *f, uint32_t *v) {
    uint8_t b[4];
    if (fread(b, 1, 4, f) != 4) return -1;
    *v = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    return 0;
}

static uint8_t *rdbytes(FILE *f, uint32_t n) {
    if (n > MAX_REPLY) return NULL;
    uint8_t *p = malloc(n ? n : 1);
    if (p && fread(p, 1, n, f) != n) {
        free(p);
        return NULL;
    }
    return p;
}

static int load_calls(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int ok = rd32(f, &ncalls) == 0 && ncalls >= 1 && ncalls <= 64;
    if (ok) calls = calloc(ncalls, sizeof *calls);
    for (uint32_t i = 0; ok && i < ncalls; i++) {
        CallSpec *c = &calls[i];
        ok = fread(c->head, 1, 4, f) == 4 && rd32(f, &c->body_len) == 0 && (c->body = rdbytes(f, c->body_len)) != NULL &&
             rd32(f, &c->expect_len) == 0 && rd32(f, &c->prefix_len) == 0 &&
             c->prefix_len <= c->expect_len && (c->prefix = rdbytes(f, c->prefix_len)) != NULL;
    }
    fclose(f);
    return ok ? 0 : -1;
}

static void progress(void) {
    uint64_t err = 0;
    for (int i = 1; i < L_COUNT; i++) err += counts[i];
    printf("progress %llu %llu\n", (unsigned long long)counts[L_OK], (unsigned long long)err);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s SOCKET CALLS_FILE CLIENTS DURATION_S WARMUP_S GRACE_S REQUESTS BAD_DUMP\n",
                argv[0]);
        return 2;
    }
    sock_path = argv[1];
    nslots = atoi(argv[3]);
    double duration = atof(argv[4]), warmup = atof(argv[5]), grace = atof(argv[6]);
    quota = strtoull(argv[7], NULL, 10);
    bad_dump = argv[8];
    if (strlen(sock_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        fprintf(stderr, "socket path too long: %s\n", sock_path);
        return 2;
    }
    if (nslots < 1 || nslots > 65536 || duration < 0 || warmup < 0 || grace < 0) {
        fprintf(stderr, "bad clients/duration/warm-up/grace\n");
        return 2;
    }
    if (load_calls(argv[2]) != 0) {
        fprintf(stderr, "cannot read the calls file %s\n", argv[2]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN); /* as in Python: a write to a closed peer is EPIPE, not death */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max; /* 4 descriptors per client */
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    slots = calloc((size_t)nslots, sizeof *slots);
    master = epoll_create1(EPOLL_CLOEXEC);
    if (!slots || master < 0) {
        fprintf(stderr, "cannot set up: %s\n", strerror(errno));
        return 2;
    }
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 2; /* wait for "go" */

    double cpu0 = cpu_s(), cpu_measure = -1, cpu_end = -1;
    int64_t start = now_ns();
    measure_ns = start + (int64_t)(warmup * 1e9);
    end_ns = quota ? NEVER : measure_ns + (int64_t)(duration * 1e9);
    last_ns = measure_ns;
    int64_t give_up = quota ? NEVER : end_ns + (int64_t)(grace * 1e9);
    int64_t next_report = start + PROGRESS_NS;
    for (int i = 0; i < nslots; i++) {
        Slot *s = &slots[i];
        s->ep = s->pr = s->pw = s->sock = -1;
        s->registered = -1;
        s->t0 = now_ns();
        active++;
        advance(s, NULL, -1);
    }
    struct epoll_event ready[256], got[MAX_EVENTS];
    while (active) {
        int64_t t = now_ns();
        if (cpu_measure < 0 && t >= measure_ns) cpu_measure = cpu_s();
        if (cpu_end < 0 && t >= end_ns) cpu_end = cpu_s();
        if (t >= next_report) {
            progress();
            next_report = t + PROGRESS_NS;
        }
        if (t >= give_up) { /* still running: counted as timeouts, descriptors closed */
            for (int i = 0; i < nslots; i++) {
                if (slots[i].busy) {
                    counts[L_TIMEOUT]++;
                    delete_socket(&slots[i]);
                    active--;
                }
            }
            break;
        }
        int64_t first = NEVER;
        for (int i = 0; i < nslots; i++)
            if (slots[i].busy && slots[i].deadline < first) first = slots[i].deadline;
        int64_t wake = first < next_report ? first : next_report;
        if (give_up < wake) wake = give_up;
        if (cpu_measure < 0 && measure_ns < wake) wake = measure_ns;
        if (cpu_end < 0 && end_ns < wake) wake = end_ns;
        int64_t ms = (wake - t + 999999) / 1000000;
        int nready = epoll_wait(master, ready, 256, ms < 0 ? 0 : (int)(ms > 1000 ? 1000 : ms));
        for (int k = 0; k < nready; k++) {
            Slot *s = &slots[ready[k].data.u32];
            if (!s->busy || s->ep < 0 || s->registered != s->ep) continue;
            int n = epoll_wait(s->ep, got, MAX_EVENTS, 0);
            if (n > 0) advance(s, got, n);
        }
        if (first <= now_ns()) {
            int64_t t2 = now_ns();
            for (int i = 0; i < nslots; i++)
                if (slots[i].busy && slots[i].deadline <= t2) advance(&slots[i], got, 0); /* timed out */
        }
    }
    double cpu1 = cpu_s();
    if (cpu_measure < 0) cpu_measure = cpu0;
    if (cpu_end < 0) cpu_end = cpu1;
    progress();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double user = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
    double sys = (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    double window = quota ? (double)(last_ns - measure_ns) / 1e9 : duration;
    uint64_t requests = 0;
    for (int i = 0; i < L_COUNT; i++) requests += counts[i];
    printf("{\"loadgen\": \"native\", \"clients\": %d, \"calls_per_request\": %u, \"window_s\": %.6f, "
           "\"requests\": %llu, \"calls_in_window\": %llu, \"counts\": {",
           nslots, ncalls, window, (unsigned long long)requests, (unsigned long long)calls_in_window);
    int first_label = 1;
    for (int i = 0; i < L_COUNT; i++) {
        if (!counts[i]) continue;
        printf("%s\"%s\": %llu", first_label ? "" : ", ", LABELS[i], (unsigned long long)counts[i]);
        first_label = 0;
    }
    printf("}, \"latency_ns\": {\"count\": %llu, \"min\": %lld, \"mean\": %.1f, \"p50\": %.1f, "
           "\"p90\": %.1f, \"p99\": %.1f, \"max\": %lld}, \"cpu_s\": %.6f, \"cpu_window_s\": %.6f, "
           "\"cpu_user_s\": %.6f, \"cpu_system_s\": %.6f, \"bad_reply_dumped\": %s}\n",
           (unsigned long long)hcount, hcount ? (long long)hmin : 0LL,
           hcount ? (double)hsum / (double)hcount : 0.0, hpercentile(0.50), hpercentile(0.90),
           hpercentile(0.99), (long long)hmax, cpu1 - cpu0, cpu_end - cpu_measure, user, sys,
           bad_dumped ? "true" : "false");
    fflush(stdout);
    return 0;
}
