/*
 * labstat — measuring helpers for the Xen lab, run inside dom0.
 * Built by scripts/xen-lab against the libxenctrl the dom0 runs: on the host (Debian 12,
 * Xen 4.17) or inside the trixie root (Xen 4.20); not part of Romulus itself. Uses only
 * xc_domain_getinfolist / xc_domaininfo_t, which both versions have (xc_domain_getinfo and
 * xc_dominfo_t were removed in Xen 4.18).
 *
 *   labstat tap LOG
 *       Copies stdin to stdout unchanged (put it in front of `xl migrate-receive`) and parses
 *       the libxl migration stream (v2: "LibxlFmt" header, libxl records, the libxc stream
 *       inline) on the way. Writes one line per checkpoint to LOG:
 *         ckpt <n> t_ms=<ms since first byte> bytes=<wire bytes of this checkpoint>
 *              pages=<pfns in PAGE_DATA> data_pages=<pages carrying 4 KiB of data>
 *       and at EOF one line:
 *         summary checkpoints=<n> total_bytes=<b> first_bytes=<b> steady_mean_bytes=<b>
 *                 steady_median_bytes=<b> steady_mean_pages=<p> period_median_ms=<ms>
 *       ("steady" = every checkpoint but the first, which carries the whole memory).
 *       xl's preamble before the libxl header (savefile magic and the domain config) is
 *       skipped by searching for the "LibxlFmt" ident, and counted in checkpoint 1.
 *       If the stream cannot be parsed it keeps copying and reports parse=lost.
 *
 *   labstat pausemon DOMID LOG [POLL_US]
 *       Polls the domain's state (xc_domain_getinfolist) every POLL_US (default 1000) µs and
 *       records every interval in which it is not running (suspended for a checkpoint, or
 *       paused). Stops when the domain disappears or on SIGTERM/SIGINT; writes one line per
 *       interval and a summary line:
 *         summary pauses=<n> steady_median_ms=<ms> steady_p90_ms=<ms> steady_max_ms=<ms>
 *                 steady_mean_ms=<ms> first_ms=<ms> poll_us=<us>
 *
 *   labstat killrunning DOMID PID
 *       SIGKILLs PID (a replicator) right after the domain resumes from a checkpoint: not
 *       inside a suspend window, nor with a suspend request pending. Exit 0 if the domain
 *       still runs after the kill, 1 if not, 2 on error.
 *
 *   labstat triplefault DOMID
 *       Makes a running HVM/PVH guest triple-fault, the way a guest kernel that dies hard does:
 *       with the domain paused (and not suspended), vCPU0's IDT limit is set to 0 and its RIP
 *       to 0 (xc_domain_hvm_getcontext/setcontext); once unpaused the fetch faults, no
 *       exception can be delivered, and Xen logs "dNv0 Triple fault - invoking HVM shutdown
 *       action 1" and shuts the domain down with reason reboot. Exit 0 when done, 3 when the
 *       domain had already shut down by itself (reason other than suspend), 2 on error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xenctrl.h>
#include <xen/hvm/save.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}
static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------------ tap */

enum mode { M_SEEK, M_LIBXL_HDR, M_LIBXL_REC, M_LIBXC_IHDR, M_LIBXC_REC, M_LOST };

struct tap {
    enum mode mode;
    int libxc_seen_header;     /* the libxc image+domain headers come only once */
    unsigned char hdr[40];     /* header being accumulated */
    unsigned char win[8];      /* M_SEEK: the last 8 bytes seen */
    uint64_t preamble;         /* bytes before the libxl header (xl's own preamble) */
    size_t need, have;         /* header bytes wanted / held */
    uint64_t skip;             /* body bytes still to pass over */
    int in_libxc;              /* the record whose header we read belongs to libxc */
    /* per checkpoint */
    uint64_t bytes_total, ckpt_start;
    uint64_t pages, data_pages;
    unsigned n;
    double t0, t_last;
    uint64_t *ck_bytes; uint64_t *ck_pages; double *ck_t;
    size_t cap;
    FILE *log;
};

static void tap_ckpt(struct tap *t)
{
    uint64_t b = t->bytes_total - t->ckpt_start;
    double tm = now_ms() - t->t0;
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 1024;
        t->ck_bytes = realloc(t->ck_bytes, t->cap * sizeof(uint64_t));
        t->ck_pages = realloc(t->ck_pages, t->cap * sizeof(uint64_t));
        t->ck_t = realloc(t->ck_t, t->cap * sizeof(double));
        if (!t->ck_bytes || !t->ck_pages || !t->ck_t) { perror("realloc"); exit(2); }
    }
    t->ck_bytes[t->n] = b; t->ck_pages[t->n] = t->pages; t->ck_t[t->n] = tm;
    t->n++;
    fprintf(t->log, "ckpt %u t_ms=%.1f bytes=%llu pages=%llu data_pages=%llu\n", t->n, tm,
            (unsigned long long)b, (unsigned long long)t->pages, (unsigned long long)t->data_pages);
    fflush(t->log);
    t->ckpt_start = t->bytes_total;
    t->pages = t->data_pages = 0;
}

static void want(struct tap *t, enum mode m, size_t n) { t->mode = m; t->need = n; t->have = 0; }

static uint32_t le32(const unsigned char *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

/* a complete header is in t->hdr: decide what follows. */
static void tap_header(struct tap *t, uint64_t *pending_body_peek)
{
    *pending_body_peek = 0;
    switch (t->mode) {
    case M_SEEK:        /* one byte: slide the window until it reads "LibxlFmt" */
        memmove(t->win, t->win + 1, 7);
        t->win[7] = t->hdr[0];
        t->preamble++;
        if (t->preamble > (1u << 20)) { t->mode = M_LOST; return; }
        if (t->preamble >= 8 && memcmp(t->win, "LibxlFmt", 8) == 0) {
            memcpy(t->hdr, t->win, 8);
            t->mode = M_LIBXL_HDR; t->need = 16; t->have = 8;
        } else {
            want(t, M_SEEK, 1);
        }
        return;
    case M_LIBXL_HDR:   /* "LibxlFmt" ident (BE u64), version, options */
        if (memcmp(t->hdr, "LibxlFmt", 8) != 0) { t->mode = M_LOST; return; }
        want(t, M_LIBXL_REC, 8);
        return;
    case M_LIBXC_IHDR:  /* image header 24 B + domain header 16 B */
        if (le32(t->hdr) != 0xffffffffu || memcmp(t->hdr + 8, "XENF", 4) != 0) { t->mode = M_LOST; return; }
        t->libxc_seen_header = 1;
        want(t, M_LIBXC_REC, 8);
        return;
    case M_LIBXL_REC: {
        uint32_t type = le32(t->hdr), len = le32(t->hdr + 4);
        uint64_t padded = (len + 7ull) & ~7ull;
        t->in_libxc = 0;
        t->skip = padded;
        if (type == 1 /* LIBXC_CONTEXT */) {
            /* body is empty; the libxc stream follows */
            if (padded) { t->mode = M_LOST; return; }
            if (t->libxc_seen_header) want(t, M_LIBXC_REC, 8); else want(t, M_LIBXC_IHDR, 40);
            return;
        }
        if (type == 4 /* CHECKPOINT_END */) {
            want(t, t->libxc_seen_header ? M_LIBXC_REC : M_LIBXL_REC, 8);
            tap_ckpt(t);
            return;
        }
        if (type > 5 || len > (64u << 20)) { t->mode = M_LOST; return; }
        want(t, M_LIBXL_REC, 8);
        return;
    }
    case M_LIBXC_REC: {
        uint32_t type = le32(t->hdr) & 0x7fffffffu, len = le32(t->hdr + 4);
        uint64_t padded = (len + 7ull) & ~7ull;
        if (type > 0x12 || len > (64u << 20)) { t->mode = M_LOST; return; }
        t->skip = padded;
        if (type == 1 /* PAGE_DATA */) *pending_body_peek = 1;
        if (type == 0xe /* CHECKPOINT */ || type == 0 /* END */) want(t, M_LIBXL_REC, 8);
        else want(t, M_LIBXC_REC, 8);
        return;
    }
    default:
        return;
    }
}

/* PAGE_DATA body: u32 count, u32 reserved, u64 pfn[count] (type in the top 4 bits), data */
static void tap_page_data(struct tap *t, uint32_t count, uint32_t len)
{
    t->pages += count;
    uint64_t hdr = 8 + 8ull * count;
    if (len > hdr) t->data_pages += (len - hdr) / 4096;
}

static void tap_consume(struct tap *t, const unsigned char *p, size_t n)
{
    static int peek_page_data;
    static uint32_t page_data_len;
    static unsigned char peek[4];
    static size_t peek_have;
    while (n && t->mode != M_LOST) {
        if (t->skip) {
            size_t k = t->skip < n ? t->skip : n;
            if (peek_page_data) {
                size_t j = 0;
                while (peek_have < 4 && j < k) peek[peek_have++] = p[j++];
                if (peek_have == 4) { tap_page_data(t, le32(peek), page_data_len); peek_page_data = 0; }
            }
            t->skip -= k; p += k; n -= k;
            continue;
        }
        size_t k = t->need - t->have;
        if (k > n) k = n;
        memcpy(t->hdr + t->have, p, k);
        t->have += k; p += k; n -= k;
        if (t->have == t->need) {
            uint64_t peekflag;
            uint32_t len = le32(t->hdr + 4);
            tap_header(t, &peekflag);
            if (peekflag) { peek_page_data = 1; peek_have = 0; page_data_len = len; }
        }
    }
}

static int cmd_tap(const char *logpath)
{
    static unsigned char buf[1 << 20];
    struct tap t;
    memset(&t, 0, sizeof t);
    t.log = fopen(logpath, "w");
    if (!t.log) { perror(logpath); return 2; }
    /* xl sends its own preamble first (savefile magic, header, domain config): the libxl
     * stream starts at the "LibxlFmt" ident. */
    want(&t, M_SEEK, 1);
    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        ssize_t r = read(0, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        if (!t.bytes_total) t.t0 = now_ms();
        /* parse the bytes that precede this chunk's accounting: the checkpoint that ends
         * inside this chunk must include the chunk's bytes up to its end marker, so account
         * byte-exactly by feeding the parser one record boundary at a time. */
        const unsigned char *p = buf;
        size_t left = (size_t)r;
        while (left) {
            size_t step = left;
            if (t.mode != M_LOST && !t.skip) { size_t k = t.need - t.have; if (k < step) step = k; }
            else if (t.mode != M_LOST && t.skip < step) step = t.skip;
            t.bytes_total += step;
            tap_consume(&t, p, step);
            p += step; left -= step;
        }
        for (ssize_t off = 0; off < r;) {
            ssize_t w = write(1, buf + off, r - off);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) { fprintf(t.log, "write to receiver failed: %s\n", strerror(errno)); goto out; }
            off += w;
        }
    }
out:
    close(1);
    {
        uint64_t first = t.n ? t.ck_bytes[0] : 0, sum = 0, psum = 0, med = 0;
        double per_med = 0;
        unsigned m = t.n > 1 ? t.n - 1 : 0;
        if (m) {
            uint64_t *v = malloc(m * sizeof *v);
            double *d = malloc(m * sizeof *d);
            for (unsigned i = 0; i < m; i++) {
                v[i] = t.ck_bytes[i + 1]; sum += v[i]; psum += t.ck_pages[i + 1];
                d[i] = t.ck_t[i + 1] - t.ck_t[i];
            }
            qsort(v, m, sizeof *v, cmp_u64); qsort(d, m, sizeof *d, cmp_dbl);
            med = v[m / 2]; per_med = d[m / 2];
            free(v); free(d);
        }
        fprintf(t.log,
                "summary checkpoints=%u total_bytes=%llu first_bytes=%llu steady_mean_bytes=%llu "
                "steady_median_bytes=%llu steady_mean_pages=%llu period_median_ms=%.0f parse=%s\n",
                t.n, (unsigned long long)t.bytes_total, (unsigned long long)first,
                (unsigned long long)(m ? sum / m : 0), (unsigned long long)med,
                (unsigned long long)(m ? psum / m : 0), per_med, t.mode == M_LOST ? "lost" : "ok");
        fclose(t.log);
    }
    return 0;
}

/* ------------------------------------------------------------------ domain state */

/* The state of one domain, from xc_domain_getinfolist (Xen 4.17 and 4.20 alike). */
struct domstate { int exists, dying, shutdown, paused; unsigned shutdown_reason; };

static struct domstate dom_state(xc_interface *xch, uint32_t domid)
{
    struct domstate st = { 0, 0, 0, 0, 0 };
    xc_domaininfo_t info;
    /* getinfolist returns the domains with id >= domid: check it is ours */
    if (xc_domain_getinfolist(xch, domid, 1, &info) != 1 || info.domain != domid) return st;
    st.exists = 1;
    st.dying = !!(info.flags & XEN_DOMINF_dying);
    st.shutdown = !!(info.flags & XEN_DOMINF_shutdown);
    st.paused = !!(info.flags & XEN_DOMINF_paused);
    st.shutdown_reason = (info.flags >> XEN_DOMINF_shutdownshift) & XEN_DOMINF_shutdownmask;
    return st;
}

/* ------------------------------------------------------------------ pausemon */

static volatile sig_atomic_t stop_flag;
static void on_sig(int s) { (void)s; stop_flag = 1; }

static int cmd_pausemon(uint32_t domid, const char *logpath, long poll_us)
{
    xc_interface *xch = xc_interface_open(NULL, NULL, 0);
    if (!xch) { perror("xc_interface_open"); return 2; }
    FILE *log = fopen(logpath, "w");
    if (!log) { perror(logpath); return 2; }
    signal(SIGTERM, on_sig); signal(SIGINT, on_sig);
    size_t cap = 4096, n = 0;
    double *len = malloc(cap * sizeof *len);
    int down = 0;
    double t_down = 0, t0 = now_ms();
    struct timespec slp = { poll_us / 1000000, (poll_us % 1000000) * 1000 };
    while (!stop_flag) {
        struct domstate info = dom_state(xch, domid);
        if (!info.exists || info.dying) break;
        int is_down = info.shutdown || info.paused;
        double t = now_ms();
        if (is_down && !down) { down = 1; t_down = t; }
        else if (!is_down && down) {
            down = 0;
            if (n == cap) { cap *= 2; len = realloc(len, cap * sizeof *len); }
            len[n++] = t - t_down;
            fprintf(log, "pause %zu t_ms=%.1f len_ms=%.2f\n", n, t_down - t0, t - t_down);
        }
        nanosleep(&slp, NULL);
    }
    size_t m = n > 1 ? n - 1 : 0;
    double med = 0, p90 = 0, mx = 0, mean = 0;
    if (m) {
        double *v = malloc(m * sizeof *v);
        for (size_t i = 0; i < m; i++) { v[i] = len[i + 1]; mean += v[i]; }
        qsort(v, m, sizeof *v, cmp_dbl);
        med = v[m / 2]; p90 = v[(m * 9) / 10]; mx = v[m - 1]; mean /= m;
        free(v);
    }
    fprintf(log, "summary pauses=%zu steady_median_ms=%.1f steady_p90_ms=%.1f steady_max_ms=%.1f "
                 "steady_mean_ms=%.1f first_ms=%.1f poll_us=%ld still_down=%d\n",
            n, med, p90, mx, mean, n ? len[0] : 0.0, poll_us, down);
    fclose(log);
    xc_interface_close(xch);
    return 0;
}

/* ------------------------------------------------------------------ killrunning */

/* SIGKILLs PID at a moment the domain is running and no suspend is pending: a replicator
 * killed inside its suspend window would leave the guest suspended, and a test of what
 * happens to the guest's output after the crash needs a guest that keeps producing it.
 * "Running" is not enough: the suspend request (xenstore control/shutdown) precedes the
 * guest's suspension by tens of ms, and a guest asked to suspend does so on its own after
 * the replicator died. So kill right at a resume edge (suspended -> running): the replicator
 * is then waiting for the backup's ack, and cannot request the next suspend before it. */
static int cmd_killrunning(uint32_t domid, pid_t pid)
{
    xc_interface *xch = xc_interface_open(NULL, NULL, 0);
    if (!xch) { perror("xc_interface_open"); return 2; }
    struct timespec slp = { 0, 200000 };
    int was_down = 0;
    for (long i = 0; i < 100000; i++) {   /* at most ~20 s of polling */
        struct domstate info = dom_state(xch, domid);
        if (!info.exists) {
            fprintf(stderr, "killrunning: domain %u is gone\n", domid);
            return 2;
        }
        int down = info.shutdown || info.paused;
        if (was_down && !down) {
            if (kill(pid, SIGKILL) != 0) { perror("kill"); return 2; }
            info = dom_state(xch, domid);
            printf("killed %d at a resume edge; domain %u %s\n", (int)pid, domid,
                   info.shutdown ? "suspended" : info.paused ? "paused" : "running");
            xc_interface_close(xch);
            return info.shutdown || info.paused ? 1 : 0;
        }
        was_down = down;
        nanosleep(&slp, NULL);
    }
    fprintf(stderr, "killrunning: domain %u never resumed from a checkpoint\n", domid);
    return 2;
}

/* A guest death on demand (the lab's guest-death scenario): see the header. */
static int cmd_triplefault(uint32_t domid)
{
    xc_interface *xch = xc_interface_open(NULL, NULL, 0);
    if (!xch) { perror("xc_interface_open"); return 2; }
    struct timespec slp = { 0, 1000000 };
    int paused = 0;
    for (int i = 0; i < 20000 && !paused; i++) {   /* a running moment, within ~20 s */
        if (xc_domain_pause(xch, domid) != 0) { perror("xc_domain_pause"); return 2; }
        struct domstate st = dom_state(xch, domid);
        if (!st.exists) { fprintf(stderr, "triplefault: domain %u is gone\n", domid); return 2; }
        if (!st.shutdown) { paused = 1; break; }
        xc_domain_unpause(xch, domid);   /* suspended for a checkpoint: wait for its resume */
        if (st.shutdown_reason != SHUTDOWN_suspend) {
            printf("domain %u already shut down by itself (reason %u)\n", domid, st.shutdown_reason);
            return 3;
        }
        nanosleep(&slp, NULL);
    }
    if (!paused) { fprintf(stderr, "triplefault: domain %u never ran\n", domid); return 2; }
    int rc = 2;
    int size = xc_domain_hvm_getcontext(xch, domid, NULL, 0);
    uint8_t *buf = size > 0 ? malloc((size_t)size) : NULL;
    int len = buf ? xc_domain_hvm_getcontext(xch, domid, buf, (uint32_t)size) : -1;
    if (len <= 0) {
        perror("xc_domain_hvm_getcontext (an HVM/PVH domain?)");
    } else {
        int found = 0;
        for (size_t off = 0; off + sizeof(struct hvm_save_descriptor) <= (size_t)len;) {
            struct hvm_save_descriptor *d = (struct hvm_save_descriptor *)(buf + off);
            off += sizeof *d;
            if (d->typecode == HVM_SAVE_CODE(END) || off + d->length > (size_t)len) break;
            if (d->typecode == HVM_SAVE_CODE(CPU) && d->instance == 0 && d->length >= sizeof(struct hvm_hw_cpu)) {
                struct hvm_hw_cpu *c = (struct hvm_hw_cpu *)(buf + off);
                c->idtr_limit = 0;
                c->rip = 0;
                found = 1;
            }
            off += d->length;
        }
        if (!found) fprintf(stderr, "triplefault: no CPU record for vCPU0\n");
        else if (xc_domain_hvm_setcontext(xch, domid, buf, (uint32_t)len) != 0) perror("xc_domain_hvm_setcontext");
        else rc = 0;
    }
    free(buf);
    xc_domain_unpause(xch, domid);
    xc_interface_close(xch);
    if (rc == 0) printf("domain %u: vCPU0 has no IDT and runs at 0: it triple-faults\n", domid);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "triplefault")) return cmd_triplefault((uint32_t)strtoul(argv[2], NULL, 0));
    if (argc >= 4 && !strcmp(argv[1], "killrunning"))
        return cmd_killrunning((uint32_t)strtoul(argv[2], NULL, 0), (pid_t)atoi(argv[3]));
    if (argc >= 3 && !strcmp(argv[1], "tap")) return cmd_tap(argv[2]);
    if (argc >= 4 && !strcmp(argv[1], "pausemon"))
        return cmd_pausemon((uint32_t)strtoul(argv[2], NULL, 0), argv[3], argc > 4 ? atol(argv[4]) : 1000);
    fprintf(stderr, "usage: labstat tap LOG | labstat pausemon DOMID LOG [POLL_US] | labstat killrunning DOMID PID"
                    " | labstat triplefault DOMID\n");
    return 2;
}
