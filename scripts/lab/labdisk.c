/*
 * labdisk — the Xen lab's checkable disk writer (in the guest) and its checker (in dom0).
 * Built static by scripts/xen-lab (gcc -static, no Xen headers): the same binary runs in the
 * busybox domU and in dom0. Not part of Romulus itself.
 *
 *   labdisk write DEV [START [PERIOD_MS [SEED [MAX]]]]   (an empty argument: its default)
 *       Opens DEV (the guest's data disk, /dev/xvdb) O_RDWR|O_DIRECT|O_DSYNC and, every
 *       PERIOD_MS (default 300) ms, writes record n (n = START, START+1, ..., default START 1)
 *       as one 4096-byte block at offset n*4096. Only after pwrite() returned the whole block
 *       does it print
 *           DISKREC <n> us=<microseconds the write took>
 *       on stdout (the guest's console): the guest's memory then believes record n is on the
 *       disk. n lives only in this process's memory, so a guest resumed from a checkpoint
 *       continues from the n its memory holds. A write that fails is reported as
 *           DISKERR <n> errno=<e> <strerror>
 *       (at most once a second while it keeps failing) and retried with the same n every
 *       period: the loop never skips a record. After record MAX (default 0: no limit) it
 *       prints "DISKDONE <MAX>" and exits 0, so that a check can expect exactly MAX records
 *       with nothing in flight; at the end of the device it prints "DISKFULL <n>" and exits 0
 *       (record n not written). Block 0 is never written.
 *
 *   labdisk fswrite FILE [START [PERIOD_MS [SEED [MAX]]]]
 *       The same records into FILE on a mounted filesystem (created if missing), each
 *       pwrite() followed by fsync(), printing FSREC / FSERR / FSDONE / FSFULL (at most 16 MiB
 *       of records); FILE is closed before FSDONE.
 *
 *   labdisk check FILE|DEV [SEED]
 *       Reads every 4096-byte block from 1 to the end and prints one line
 *           last=<n> holes=<k> bad=<k> records=<k> blocks=<k>
 *       last:    the highest block holding a valid record (0 if none)
 *       holes:   blocks 1..last that are all zeros (a record the writer said it wrote and a
 *                later one exists, but this one is missing)
 *       bad:     blocks anywhere that are neither all zeros nor the valid record for their
 *                own index (torn, corrupted, a record at the wrong offset, a foreign seed)
 *       records: valid records found; blocks: blocks examined.
 *       Exit 0 when holes=0 and bad=0 (records 1..last all valid, nothing after last), 1
 *       when not, 2 on an error. The first few bad blocks are described on stderr.
 *
 * A record (4096 bytes, little-endian):
 *   0   u64 magic   "LABDISK1"
 *   8   u64 seq     n (== its block index)
 *   16  u64 seed    the run's seed (default 0x5eed)
 *   24  u64 tag     mix(n, seed): checks that seq and seed belong together
 *   32  ...         padding: a keystream seeded by tag (every record's bytes differ)
 *   4088 u64 sum    FNV-1a 64 of bytes 0..4087
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

#define REC 4096

static const char kMagic[8] = {'L', 'A', 'B', 'D', 'I', 'S', 'K', '1'};

static uint64_t mix64(uint64_t x)
{
    /* splitmix64's finaliser */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t tag_of(uint64_t n, uint64_t seed) { return mix64(n ^ mix64(seed)); }

static uint64_t fnv1a(const unsigned char *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) { h ^= p[i]; h *= 0x100000001b3ULL; }
    return h;
}

static void put64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void make_record(unsigned char *b, uint64_t n, uint64_t seed)
{
    uint64_t t = tag_of(n, seed), k = t;
    memcpy(b, kMagic, 8);
    put64(b + 8, n);
    put64(b + 16, seed);
    put64(b + 24, t);
    for (size_t off = 32; off < REC - 8; off += 8) { k = mix64(k); put64(b + off, k); }
    put64(b + REC - 8, fnv1a(b, REC - 8));
}

/* 0 valid for block n, 1 all zeros, 2 bad (why in *why) */
static int classify(const unsigned char *b, uint64_t n, uint64_t seed, const char **why)
{
    static unsigned char want[REC];
    size_t i;
    for (i = 0; i < REC && b[i] == 0; i++) {}
    if (i == REC) return 1;
    if (memcmp(b, kMagic, 8) != 0) { *why = "no magic"; return 2; }
    if (fnv1a(b, REC - 8) != get64(b + REC - 8)) { *why = "checksum mismatch (torn or corrupted)"; return 2; }
    if (get64(b + 8) != n) { *why = "a valid record of another sequence number (wrong offset)"; return 2; }
    if (get64(b + 16) != seed) { *why = "a record of another seed"; return 2; }
    if (get64(b + 24) != tag_of(n, seed)) { *why = "tag does not match (seq, seed)"; return 2; }
    make_record(want, n, seed);
    if (memcmp(b, want, REC) != 0) { *why = "padding differs"; return 2; }
    return 0;
}

static uint64_t dev_size(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return 0;
    if (S_ISBLK(st.st_mode)) {
        uint64_t sz = 0;
        if (ioctl(fd, BLKGETSIZE64, &sz) != 0) return 0;
        return sz;
    }
    return (uint64_t)st.st_size;
}

static double mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    /* one write(2) per line: the console gets whole lines, nothing buffered in memory */
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (len < 0) return;
    if ((size_t)len >= sizeof line) len = sizeof line - 1;
    ssize_t w = write(1, line, (size_t)len);
    (void)w;
}

/* fs = 0: DEV, O_DIRECT|O_DSYNC, DISK* lines; fs = 1: a FILE on a mounted filesystem, each
 * record pwrite() then fsync(), FS* lines (the record is durable once FSREC is printed). */
static int do_write(int argc, char **argv, int fs)
{
    const char *p = fs ? "FS" : "DISK";
    if (argc < 3) {
        fprintf(stderr, "usage: labdisk %s %s [START [PERIOD_MS [SEED [MAX]]]]\n", fs ? "fswrite" : "write",
                fs ? "FILE" : "DEV");
        return 2;
    }
    const char *dev = argv[2];
    uint64_t n = argc > 3 && *argv[3] ? strtoull(argv[3], NULL, 0) : 1;
    long period_ms = argc > 4 && *argv[4] ? strtol(argv[4], NULL, 0) : 300;
    uint64_t seed = argc > 5 && *argv[5] ? strtoull(argv[5], NULL, 0) : 0x5eed;
    uint64_t max = argc > 6 && *argv[6] ? strtoull(argv[6], NULL, 0) : 0;
    if (n == 0) n = 1;
    if (period_ms < 0) period_ms = 0;
    int fd = fs ? open(dev, O_RDWR | O_CREAT, 0644) : open(dev, O_RDWR | O_DIRECT | O_DSYNC);
    if (fd < 0) { say("%sERR open %s errno=%d %s\n", p, dev, errno, strerror(errno)); return 2; }
    /* a file grows as it is written: at most 16 MiB of records */
    uint64_t size = fs ? (uint64_t)16 << 20 : dev_size(fd);
    unsigned char *b;
    if (posix_memalign((void **)&b, REC, REC) != 0) { say("%sERR no memory\n", p); return 2; }
    say("%sWRITER %s=%s size=%" PRIu64 " start=%" PRIu64 " period_ms=%ld seed=%#" PRIx64 " max=%" PRIu64 "\n", p,
        fs ? "file" : "dev", dev, size, n, period_ms, seed, max);
    double last_err = 0;
    for (;;) {
        if (max != 0 && n > max) {
            if (fs && close(fd) != 0) { say("FSERR close errno=%d %s\n", errno, strerror(errno)); return 1; }
            say("%sDONE %" PRIu64 "\n", p, max);
            return 0;
        }
        if ((n + 1) * (uint64_t)REC > size) { say("%sFULL %" PRIu64 "\n", p, n); return 0; }
        make_record(b, n, seed);
        double t0 = mono_us();
        ssize_t w = pwrite(fd, b, REC, (off_t)(n * REC));
        int synced = w == REC && (!fs || fsync(fd) == 0);
        double t1 = mono_us();
        if (synced) {
            say("%sREC %" PRIu64 " us=%.0f\n", p, n, t1 - t0);
            n++;
        } else {
            int e = w < 0 || (w == REC && fs) ? errno : EIO;
            if (t1 - last_err >= 1e6) {
                say("%sERR %" PRIu64 " errno=%d %s (%s after %.0f us)\n", p, n, e, strerror(e),
                    w < 0 ? "failed" : w == REC ? "fsync failed" : "short write", t1 - t0);
                last_err = t1;
            }
        }
        struct timespec ts = {period_ms / 1000, (period_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
    }
}

static int do_check(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: labdisk check FILE|DEV [SEED]\n"); return 2; }
    uint64_t seed = argc > 3 ? strtoull(argv[3], NULL, 0) : 0x5eed;
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) { fprintf(stderr, "labdisk: open %s: %s\n", argv[2], strerror(errno)); return 2; }
    uint64_t size = dev_size(fd), blocks = size / REC;
    static unsigned char b[REC];
    uint64_t last = 0, bad = 0, records = 0, zeros_total = 0, shown = 0;
    /* zero blocks below last are holes: count zeros up to each valid record */
    uint64_t zeros_since_record = 0, holes = 0;
    for (uint64_t n = 1; n < blocks; n++) {
        ssize_t r = pread(fd, b, REC, (off_t)(n * REC));
        if (r != REC) { fprintf(stderr, "labdisk: read block %" PRIu64 ": %s\n", n, r < 0 ? strerror(errno) : "short"); return 2; }
        const char *why = "";
        switch (classify(b, n, seed, &why)) {
        case 0:
            records++; last = n; holes += zeros_since_record; zeros_since_record = 0;
            break;
        case 1:
            zeros_since_record++; zeros_total++;
            break;
        default:
            bad++;
            if (shown++ < 5) fprintf(stderr, "labdisk: block %" PRIu64 ": %s\n", n, why);
        }
    }
    (void)zeros_total;
    printf("last=%" PRIu64 " holes=%" PRIu64 " bad=%" PRIu64 " records=%" PRIu64 " blocks=%" PRIu64 "\n", last, holes, bad,
           records, blocks > 0 ? blocks - 1 : 0);
    return holes == 0 && bad == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "write") == 0) return do_write(argc, argv, 0);
    if (argc >= 2 && strcmp(argv[1], "fswrite") == 0) return do_write(argc, argv, 1);
    if (argc >= 2 && strcmp(argv[1], "check") == 0) return do_check(argc, argv);
    fprintf(stderr, "usage: labdisk write DEV [START [PERIOD_MS [SEED [MAX]]]] | labdisk fswrite FILE [same] | "
                    "labdisk check FILE|DEV [SEED]\n");
    return 2;
}
