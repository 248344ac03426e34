/* launcher.c: the front of dist/expman (see build_binary.sh).
 *
 * dist/expman = this launcher + an xz stream holding PyInstaller's one-folder build of expman
 * + a trailer. PyInstaller's own one-file bootloader inflates and writes the whole bundle
 * (~100 MB) into a fresh temporary folder on every start, which cost 0.6-0.9 s per command.
 * This launcher unpacks it once, into a per-user cache, and later starts only check that
 * folder and exec the program in it:
 *
 *   $XDG_CACHE_HOME/expman/<version>-<hash>/   (default ~/.cache/expman/...; when that cannot
 *   be used, ${TMPDIR:-/tmp}/expman-<uid>/...)
 *
 * <hash> is the SHA-256 of the packed folder, so every build gets its own folder and a stale
 * one is never reused. Safety:
 *   - the cache root and the build's folder must be directories (not symlinks) owned by the
 *     user and closed to group and others (mode 0700), checked on every start; otherwise the
 *     launcher refuses to run them;
 *   - unpacking goes into a fresh private folder next to the final one; the xz stream carries
 *     a SHA-256 of its content, which liblzma checks before the stream ends, and the folder is
 *     renamed into place only after that check passed, so a half-written or corrupt unpack is
 *     never run;
 *   - two first starts racing each unpack into their own folder; the first rename wins, the
 *     loser deletes its copy and runs the winner's;
 *   - entry paths are relative and free of "..", files are created with O_EXCL|O_NOFOLLOW.
 * argv (including argv[0], so `exp` stays `exp`) is passed on unchanged.
 *
 * Build: cc -O2 -static -o launcher launcher.c -llzma  (build_binary.sh does it)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <lzma.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAGIC "EXPMANPK"
#define ID_LEN 64
#define TRAILER_LEN (8 + 8 + 8 + ID_LEN)
#define PROGRAM "expman"  /* the program inside the folder */

static const char *self_path = "/proc/self/exe";

static void die(const char *what, const char *path) {
    if (path)
        fprintf(stderr, "expman: %s: %s: %s\n", what, path, strerror(errno));
    else
        fprintf(stderr, "expman: %s\n", what);
    exit(1);
}

static uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* The ownership check, the one place it is written: `path` is a real directory (lstat: not a
 * symlink) owned by us. Returns its permission bits, or -1 when it is not (or is not there). */
static int owned_dir_mode(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) return -1;
    return (int)(st.st_mode & 07777);
}

/* A private directory: owned by us (above) and closed to group and others. */
static int private_dir(const char *path) {
    int mode = owned_dir_mode(path);
    return mode >= 0 && (mode & 077) == 0;
}

/* Make `path` a private directory, creating missing parents (0700). 0 on success. */
static int make_private(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return -1;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
    int mode = owned_dir_mode(buf);
    if (mode < 0) {
        errno = EPERM;
        return -1;
    }
    if ((mode & 077) != 0 && chmod(buf, 0700) != 0) return -1;
    return 0;
}

/* --- reading the xz stream ------------------------------------------------------------- */

struct reader {
    int fd;
    uint64_t left;           /* compressed bytes not yet read from the file */
    int ended;               /* liblzma said LZMA_STREAM_END: the check passed */
    lzma_stream strm;
    unsigned char in[1 << 16];
};

/* Read the next block of compressed input once liblzma has used up the last one. */
static int refill(struct reader *r) {
    if (r->strm.avail_in || !r->left) return 0;
    size_t want = r->left < sizeof r->in ? (size_t)r->left : sizeof r->in;
    ssize_t got = read(r->fd, r->in, want);
    if (got <= 0) return -1;
    r->strm.next_in = r->in;
    r->strm.avail_in = (size_t)got;
    r->left -= (uint64_t)got;
    return 0;
}

static int xread(struct reader *r, void *dst, size_t n) {
    r->strm.next_out = dst;
    r->strm.avail_out = n;
    while (r->strm.avail_out) {
        if (refill(r) != 0) return -1;
        lzma_action action = (r->left || r->strm.avail_in) ? LZMA_RUN : LZMA_FINISH;
        lzma_ret ret = lzma_code(&r->strm, action);
        if (ret == LZMA_STREAM_END) {
            r->ended = 1;
            return r->strm.avail_out ? -1 : 0;
        }
        if (ret != LZMA_OK) return -1;
    }
    return 0;
}

/* After the end entry: the stream must end here, and liblzma checks its SHA-256. */
static int xfinish(struct reader *r) {
    unsigned char extra;
    while (!r->ended) {
        r->strm.next_out = &extra;
        r->strm.avail_out = 1;
        if (refill(r) != 0) return -1;
        lzma_ret ret = lzma_code(&r->strm, (r->left || r->strm.avail_in) ? LZMA_RUN : LZMA_FINISH);
        if (r->strm.avail_out == 0) return -1;  /* data after the end entry */
        if (ret == LZMA_STREAM_END) r->ended = 1;
        else if (ret != LZMA_OK) return -1;
    }
    return 0;
}

static int safe_relative(const char *path) {
    if (!*path || path[0] == '/') return 0;
    for (const char *p = path; p; p = strchr(p, '/'), p = p ? p + 1 : NULL)
        if (p[0] == '.' && p[1] == '.' && (p[2] == '/' || p[2] == 0)) return 0;
    return 1;
}

/* Unpack the archive into the directory fd `dir`. Entries:
 *   'D' u32 mode, u16 len, path        a directory
 *   'F' u32 mode, u16 len, u64 size, path, data
 *   'L' u16 len, u16 target_len, path, target     a symbolic link
 *   'E'                                 the end                     (integers little-endian) */
static int unpack(struct reader *r, int dir) {
    static unsigned char buf[1 << 18];
    char path[4096], target[4096];
    for (;;) {
        unsigned char type, head[14];
        if (xread(r, &type, 1)) return -1;
        if (type == 'E') return xfinish(r);
        if (type == 'D' || type == 'F') {
            size_t headlen = type == 'F' ? 14 : 6;
            if (xread(r, head, headlen)) return -1;
            unsigned mode = head[0] | head[1] << 8 | head[2] << 16 | (unsigned)head[3] << 24;
            size_t len = head[4] | head[5] << 8;
            if (len >= sizeof path || xread(r, path, len)) return -1;
            path[len] = 0;
            if (!safe_relative(path)) return -1;
            if (type == 'D') {
                if (mkdirat(dir, path, 0700) != 0 && errno != EEXIST) return -1;
                continue;
            }
            uint64_t size = le64(head + 6);
            int fd = openat(dir, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                            (mode & 0100) ? 0700 : 0600);
            if (fd < 0) return -1;
            while (size) {
                size_t n = size < sizeof buf ? (size_t)size : sizeof buf;
                if (xread(r, buf, n)) { close(fd); return -1; }
                for (size_t off = 0; off < n;) {
                    ssize_t w = write(fd, buf + off, n - off);
                    if (w < 0) { if (errno == EINTR) continue; close(fd); return -1; }
                    off += (size_t)w;
                }
                size -= n;
            }
            if (close(fd) != 0) return -1;
        } else if (type == 'L') {
            if (xread(r, head, 4)) return -1;
            size_t len = head[0] | head[1] << 8, tlen = head[2] | head[3] << 8;
            if (len >= sizeof path || tlen >= sizeof target) return -1;
            if (xread(r, path, len) || xread(r, target, tlen)) return -1;
            path[len] = target[tlen] = 0;
            if (!safe_relative(path) || target[0] == '/') return -1;
            if (symlinkat(target, dir, path) != 0) return -1;
        } else {
            return -1;
        }
    }
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static void remove_tree(const char *path) {
    nftw(path, remove_entry, 32, FTW_DEPTH | FTW_PHYS);
}

/* Unpack into a private temporary folder in `root`, then rename it to `final`. */
static void install(const char *root, const char *final, const char *id,
                    uint64_t offset, uint64_t size) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s/.unpack-%s-XXXXXX", root, id) >= (int)sizeof tmp)
        die("cache path too long", NULL);
    if (!mkdtemp(tmp)) die("cannot create", tmp);
    int dir = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) die("cannot open", tmp);

    struct reader *r = calloc(1, sizeof *r);
    if (!r) die("out of memory", NULL);
    r->fd = open(self_path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0 || lseek(r->fd, (off_t)offset, SEEK_SET) < 0) die("cannot read", self_path);
    r->left = size;
    r->strm = (lzma_stream)LZMA_STREAM_INIT;
    if (lzma_stream_decoder(&r->strm, UINT64_MAX, 0) != LZMA_OK) die("liblzma failed", NULL);
    int bad = unpack(r, dir);
    int saved = errno;
    lzma_end(&r->strm);
    close(r->fd);
    close(dir);
    free(r);
    if (bad) {
        remove_tree(tmp);
        errno = saved;
        fprintf(stderr, "expman: this binary is damaged or the disk is full: could not unpack "
                "it into %s (%s)\n", root, strerror(saved));
        exit(1);
    }
    if (rename(tmp, final) != 0) {
        saved = errno;
        remove_tree(tmp);
        if (saved != EEXIST && saved != ENOTEMPTY) { errno = saved; die("cannot create", final); }
        /* another start won the race: run its copy */
    }
}

/* The cache root: $XDG_CACHE_HOME/expman or $HOME/.cache/expman, else ${TMPDIR:-/tmp}/expman-UID.
 * Returns 0 when `out` is a private directory. */
static int cache_root(char *out, size_t n, int fallback) {
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int len;
    if (!fallback) {
        if (xdg && xdg[0] == '/')
            len = snprintf(out, n, "%s/expman", xdg);
        else if (home && home[0] == '/')
            len = snprintf(out, n, "%s/.cache/expman", home);
        else
            return -1;
    } else {
        const char *tmp = getenv("TMPDIR");
        len = snprintf(out, n, "%s/expman-%u", tmp && tmp[0] == '/' ? tmp : "/tmp",
                       (unsigned)geteuid());
    }
    if (len < 0 || (size_t)len >= n) return -1;
    if (private_dir(out)) return 0;
    return make_private(out);
}

int main(int argc, char **argv) {
    (void)argc;
    unsigned char trailer[TRAILER_LEN];
    char id[ID_LEN + 1], root[4096], dir[4096], program[4096];

    int fd = open(self_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("cannot read", self_path);
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < TRAILER_LEN || pread(fd, trailer, TRAILER_LEN, end - TRAILER_LEN) != TRAILER_LEN
        || memcmp(trailer, MAGIC, 8) != 0)
        die("this binary has no packed program (build it with build_binary.sh)", NULL);
    close(fd);
    uint64_t offset = le64(trailer + 8), size = le64(trailer + 16);
    memcpy(id, trailer + 24, ID_LEN);
    id[ID_LEN] = 0;
    if (!safe_relative(id) || strchr(id, '/') || offset + size > (uint64_t)end)
        die("this binary's trailer is damaged", NULL);

    for (int fallback = 0; fallback < 2; fallback++) {
        if (cache_root(root, sizeof root, fallback) != 0) continue;
        if (snprintf(dir, sizeof dir, "%s/%s", root, id) >= (int)sizeof dir) continue;
        if (snprintf(program, sizeof program, "%s/" PROGRAM, dir) >= (int)sizeof program)
            continue;
        if (!private_dir(dir)) {
            struct stat st;
            if (lstat(dir, &st) == 0) {  /* there, but not ours or not private: do not run it */
                fprintf(stderr, "expman: %s is not a private directory of this user "
                        "(owner-only, mode 0700); remove it\n", dir);
                exit(1);
            }
            install(root, dir, id, offset, size);
            if (!private_dir(dir)) die("cannot use", dir);
        }
        execv(program, argv);
        die("cannot run", program);
    }
    fprintf(stderr, "expman: no private cache directory to unpack into: set XDG_CACHE_HOME (or "
            "HOME, or TMPDIR) to a directory you own\n");
    return 1;
}
