/*
 * libpowerloss: an LD_PRELOAD library that records what would survive a power cut.
 *
 * A SIGKILL keeps everything the process wrote, because the page cache survives it. A power cut
 * keeps only what reached the disk, and a program can rely only on what it fsynced. This library
 * runs inside the process under test. It watches the synchronisation calls, and at each one it
 * copies the state just made durable into a "durable image". After the process has been killed,
 * tests/powerloss/__init__.py:restore_after_power_cut() rebuilds the tracked directory from that
 * image. The tracked directory then holds what a power cut at the moment of the kill would have
 * left on disk.
 *
 * Environment:
 *   POWERLOSS_DIR      the tracked directory. Only regular files and directories below it (on its
 *                      file system) are modelled. Unset: the library does nothing.
 *   POWERLOSS_DURABLE  where the image lives. It must not be inside POWERLOSS_DIR. The layout is
 *                      img/root (identity of the tracked directory), img/i/<id> (durable content
 *                      of a file), img/d/<id> (durable listing of a directory, one line per entry:
 *                      "f|d <id> <octal mode> <name>") and img/g/<inode> (generation counters).
 *                      An <id> is "<inode number>.<generation>", see ident().
 * A misconfigured environment (a directory that does not exist, an image inside the tracked
 * directory, a failed write to the image) makes the process exit with status 111 and a message
 * on stderr. It never continues silently, because a shim that records nothing would make every
 * power-loss test pass for the wrong reason.
 *
 * What it models (POSIX durability, read strictly):
 *   - fsync(fd) and fdatasync(fd) on a regular file: its whole current content becomes durable.
 *     The content is keyed by inode identity, not by name. Writes, ftruncate and fallocate that no later
 *     sync covers are lost.
 *   - fsync/fdatasync on a directory: its current list of entries becomes durable. This covers
 *     creations, unlinks, renames and mkdirs inside it, including renames over an existing name.
 *     A file that was fsynced but whose directory never was is therefore absent after the cut.
 *     So is a rename that no directory fsync followed: the old name comes back. SQLite fsyncs the
 *     directory after creating a journal or WAL (SQLITE_DISABLE_DIRSYNC is not set on Debian).
 *   - write/pwrite/writev/pwritev on an fd opened with O_SYNC or O_DSYNC, and pwritev2 with
 *     RWF_SYNC or RWF_DSYNC: the file is durable after each call, as if fsynced.
 *   - sync() and syncfs(): the whole tracked tree (contents and listings) becomes durable.
 *   - A file that was created but whose content was never synced is restored empty. Its mode
 *     comes from the listing, as recorded at the directory fsync.
 *   - A new file or directory (O_CREAT on a missing path, creat, mkdir) gets a new generation of
 *     its inode number. ext4 hands a freed number to the next new file at once, while a durable
 *     listing may still name the old inode, for example after a replace that no directory fsync
 *     followed. The old inode's records are kept, and the image is discarded at restore.
 *   - The image is written atomically: temporary file, then rename. Image updates are serialised
 *     by a mutex inside each process and by flock(POWERLOSS_DURABLE/.lock) between processes. A
 *     SIGKILL that lands during a sync therefore leaves either the old or the new durable state,
 *     and either is a correct outcome, because the sync had not returned.
 *   - The first process that loads the library with no image present snapshots the whole tracked
 *     tree as durable. Whatever was on disk before the experiment counts as durable, so prepare
 *     the directory before starting the first shimmed process.
 *
 * What it does NOT model:
 *   - Torn or partial writes. A real disk may persist part of an unsynced write, a torn sector,
 *     or zero-filled or garbage blocks, for example an inode whose size was committed before its
 *     data. Here, unsynced data is all-or-nothing: it is lost.
 *   - Reordering and partial progress within an fsync, and writes that reached the disk early.
 *     This model is the pessimistic one: nothing that was not synced survives. Real file systems
 *     often keep more (ext4 data=ordered commits a new directory entry together with a file's
 *     fsync), never less.
 *   - Lying disks, whose volatile write cache ignores flushes. SD cards do this; no test can.
 *   - mmap/msync. SQLite writes its database and WAL through pwrite; it maps only the -shm file,
 *     which needs no durability and which SQLite rebuilds from the WAL on open. The -shm file is
 *     restored empty.
 *   - Symlinks, device nodes, sockets, FIFOs, names that contain '\n', O_TMPFILE+linkat, xattrs,
 *     ownership and timestamps. Nested mount points are skipped.
 *   - Reuse of an inode number that the shim did not see created: a file created outside the
 *     tracked directory and renamed into it, or created by a process not under the shim. Such a
 *     file takes the generation its number already has.
 *   - Modes are taken from the listing at the time of the directory fsync. A later chmod needs a
 *     sync of the directory to be recorded.
 *   - Writers that do not run under the library (statically linked or setuid programs, other
 *     tools). What they do to the tracked directory after the image exists is not recorded.
 *   - Concurrent writes during an fsync are captured if they land before the copy is made. A real
 *     disk might keep them too.
 *
 * Why so few calls are intercepted: durability is decided only at sync points, and at those
 * points the library reads the real state (file content, directory listing). open/write/rename/
 * unlink therefore need no mirroring, and there is no shadow state to drift. Only three things
 * are intercepted: file creation (to tell reused inode numbers apart), writes (to honour O_SYNC and
 * O_DSYNC) and the sync calls themselves.
 *
 * Build: gcc -shared -fPIC -O2 -o libpowerloss.so shim.c -ldl   (tests/powerloss/__init__.py)
 */
#define _GNU_SOURCE
#undef _FORTIFY_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))
#define MAX_DEPTH 64
#define TMP_LEN (PATH_MAX + 64)
#define ID_LEN 48

/* ------------------------------------------------------------------ real functions */

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_creat)(const char *, mode_t);
static int (*real_creat64)(const char *, mode_t);
static int (*real_mkdir)(const char *, mode_t);
static int (*real_mkdirat)(int, const char *, mode_t);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off64_t);
static ssize_t (*real_pwritev2)(int, const struct iovec *, int, off_t, int);
static ssize_t (*real_pwritev64v2)(int, const struct iovec *, int, off64_t, int);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_syncfs)(int);
static void (*real_sync)(void);

/* ------------------------------------------------------------------ state */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_active;               /* POWERLOSS_DIR set and valid */
static char g_dir[PATH_MAX];       /* realpath of the tracked directory */
static size_t g_dirlen;
static dev_t g_dev;                /* its file system */
static char g_durable[PATH_MAX];   /* realpath of POWERLOSS_DURABLE */
static char g_img[PATH_MAX];       /* g_durable/img */
static int g_lockfd = -1;          /* flock between processes, held with g_mu */
static unsigned long g_seq;        /* temporary file names, under g_mu */
static char g_buf[1 << 16];        /* copy buffer, under g_mu */

static void die(const char *what, const char *arg)
{
    char msg[PATH_MAX + 256];
    int n = snprintf(msg, sizeof msg, "powerloss shim: %s%s%s (errno %d: %s)\n", what, arg ? ": " : "",
                     arg ? arg : "", errno, strerror(errno));
    if (n > 0 && real_write)
        (void)!real_write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    _exit(111);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = real_write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int is_under(const char *path)
{
    return strncmp(path, g_dir, g_dirlen) == 0 && (path[g_dirlen] == '\0' || path[g_dirlen] == '/');
}

/* Is fd a regular file or directory below the tracked directory? Fills *st. */
static int fd_tracked(int fd, struct stat *st)
{
    char link[64], path[PATH_MAX];
    if (!g_active || fd < 0 || fstat(fd, st) != 0 || st->st_dev != g_dev)
        return 0;
    if (!S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode))
        return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0)
        return 0;
    path[n] = '\0'; /* an unlinked file reads "<path> (deleted)": still below the directory */
    return is_under(path);
}

static void lock_image(void)
{
    char path[PATH_MAX + 16];
    pthread_mutex_lock(&g_mu);
    snprintf(path, sizeof path, "%s/.lock", g_durable);
    g_lockfd = real_openat(AT_FDCWD, path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (g_lockfd < 0)
        die("cannot open the image lock", path);
    while (flock(g_lockfd, LOCK_EX) != 0)
        if (errno != EINTR)
            die("cannot lock the image", path);
}

static void unlock_image(void)
{
    close(g_lockfd); /* releases the flock */
    g_lockfd = -1;
    pthread_mutex_unlock(&g_mu);
}

/* Image records: written to a temporary file, renamed into place. */
static int tmp_open(char *tmp)
{
    snprintf(tmp, TMP_LEN, "%s/tmp.%ld.%lu", g_img, (long)getpid(), ++g_seq);
    return real_openat(AT_FDCWD, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
}

static void tmp_commit(int tfd, const char *tmp, char kind, const char *id, int ok)
{
    char final[PATH_MAX + 64];
    snprintf(final, sizeof final, "%s/%c/%s", g_img, kind, id);
    if (close(tfd) != 0)
        ok = 0;
    if (!ok || rename(tmp, final) != 0) {
        unlink(tmp);
        die("cannot write the durable image", final);
    }
}

/* Identity of an inode in the image: "<inode number>.<generation>". The generation (img/g/<ino>,
 * 0 when absent) is bumped whenever a new file or directory gets that number, so records of a
 * deleted inode that a durable listing still names are never confused with its successor's. */
static void ident(ino_t ino, char id[ID_LEN])
{
    char path[PATH_MAX + 32], buf[32];
    unsigned long long gen = 0;
    snprintf(path, sizeof path, "%s/g/%llu", g_img, (unsigned long long)ino);
    int fd = real_openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        close(fd);
        if (n > 0) {
            buf[n] = '\0';
            gen = strtoull(buf, NULL, 10);
        }
    }
    snprintf(id, ID_LEN, "%llu.%llu", (unsigned long long)ino, gen);
}

static void bump_generation(ino_t ino)
{
    char id[ID_LEN], tmp[TMP_LEN], path[PATH_MAX + 32], line[32];
    ident(ino, id);
    unsigned long long gen = strtoull(strchr(id, '.') + 1, NULL, 10) + 1;
    int n = snprintf(line, sizeof line, "%llu\n", gen);
    int t = tmp_open(tmp);
    if (t < 0)
        die("cannot create a file in the image", tmp);
    int ok = write_all(t, line, (size_t)n) == 0;
    ok = close(t) == 0 && ok;
    snprintf(path, sizeof path, "%s/g/%llu", g_img, (unsigned long long)ino);
    if (!ok || rename(tmp, path) != 0)
        die("cannot write the durable image", path);
}

/* The durable content of a regular file: a copy of its current bytes. */
static void record_file(int fd, ino_t ino)
{
    char tmp[TMP_LEN], id[ID_LEN];
    int src = fd, owned = 0, fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (fl & O_ACCMODE) == O_WRONLY) {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        src = real_openat(AT_FDCWD, link, O_RDONLY | O_CLOEXEC);
        if (src < 0)
            die("cannot reopen a write-only file to record it", link);
        owned = 1;
    }
    int t = tmp_open(tmp), ok = t >= 0;
    if (t < 0)
        die("cannot create a file in the image", tmp);
    for (off64_t off = 0; ok;) {
        ssize_t n = pread64(src, g_buf, sizeof g_buf, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            ok = n == 0;
            break;
        }
        ok = write_all(t, g_buf, (size_t)n) == 0;
        off += n;
    }
    if (owned)
        close(src);
    ident(ino, id);
    tmp_commit(t, tmp, 'i', id, ok);
}

/* The durable listing of a directory (dfd is consumed). With tree != 0, also the durable content
 * of every file and the listing of every subdirectory below it (for sync, syncfs and the first
 * snapshot). */
static void record_dir(int dfd, ino_t ino, int tree, int depth)
{
    char tmp[TMP_LEN], line[NAME_MAX + 96], id[ID_LEN];
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        die("cannot list a tracked directory", NULL);
    }
    int t = tmp_open(tmp), ok = t >= 0;
    if (t < 0)
        die("cannot create a file in the image", tmp);
    struct dirent *e;
    while (ok && (e = readdir(d)) != NULL) {
        struct stat st;
        const char *name = e->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || strchr(name, '\n'))
            continue;
        if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_dev != g_dev)
            continue;
        char kind = S_ISREG(st.st_mode) ? 'f' : S_ISDIR(st.st_mode) ? 'd' : 0;
        if (!kind)
            continue;
        ident(st.st_ino, id);
        int n = snprintf(line, sizeof line, "%c %s %o %s\n", kind, id, (unsigned)(st.st_mode & 07777), name);
        ok = n > 0 && (size_t)n < sizeof line && write_all(t, line, (size_t)n) == 0;
        if (!ok || !tree)
            continue;
        int cfd = real_openat(dirfd(d), name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (cfd < 0)
            die("cannot open a tracked file to snapshot it", name);
        if (kind == 'f') {
            record_file(cfd, st.st_ino);
            close(cfd);
        } else if (depth < MAX_DEPTH) {
            record_dir(cfd, st.st_ino, tree, depth + 1);
        } else {
            close(cfd);
        }
    }
    closedir(d);
    ident(ino, id);
    tmp_commit(t, tmp, 'd', id, ok);
}

static void record_tree(void)
{
    struct stat st;
    int dfd = real_openat(AT_FDCWD, g_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fstat(dfd, &st) != 0)
        die("cannot open the tracked directory", g_dir);
    record_dir(dfd, st.st_ino, 1, 0);
}

/* After a successful sync of fd. */
static void after_sync(int fd)
{
    struct stat st;
    int saved = errno;
    if (fd_tracked(fd, &st)) {
        lock_image();
        if (S_ISREG(st.st_mode)) {
            record_file(fd, st.st_ino);
        } else {
            char link[64];
            snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
            int dfd = real_openat(AT_FDCWD, link, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd < 0)
                die("cannot reopen a tracked directory", link);
            record_dir(dfd, st.st_ino, 0, 0);
        }
        unlock_image();
    }
    errno = saved;
}

/* After a successful write: durable at once on an O_SYNC/O_DSYNC fd or with RWF_(D)SYNC. */
static void after_write(int fd, ssize_t written, int sync_flag)
{
    if (!g_active || written < 0)
        return;
    int saved = errno, fl = fcntl(fd, F_GETFL);
    errno = saved;
    if (sync_flag || (fl >= 0 && (fl & O_DSYNC)))
        after_sync(fd);
}

/* A new inode: it starts with no durable content, under a new generation of its number. */
static void forget_new(int fd)
{
    struct stat st;
    int saved = errno;
    if (fd_tracked(fd, &st)) {
        lock_image();
        bump_generation(st.st_ino);
        unlock_image();
    }
    errno = saved;
}

static void atfork_prepare(void) { pthread_mutex_lock(&g_mu); }
static void atfork_release(void) { pthread_mutex_unlock(&g_mu); }

/* First process with no image: everything now on disk is durable. */
static void init_image(void)
{
    char path[PATH_MAX + 32];
    lock_image();
    snprintf(path, sizeof path, "%s/root", g_img);
    if (access(path, F_OK) != 0) {
        const char *sub[] = {"", "/i", "/d", "/g"};
        for (int k = 0; k < 4; k++) {
            snprintf(path, sizeof path, "%s%s", g_img, sub[k]);
            if (real_mkdir(path, 0755) != 0 && errno != EEXIST)
                die("cannot create the image", path);
        }
        record_tree();
        char tmp[TMP_LEN], line[ID_LEN + 2], id[ID_LEN];
        int t = tmp_open(tmp);
        struct stat st;
        if (t < 0 || stat(g_dir, &st) != 0)
            die("cannot create the image root", tmp);
        ident(st.st_ino, id);
        int n = snprintf(line, sizeof line, "%s\n", id);
        int ok = write_all(t, line, (size_t)n) == 0 && close(t) == 0;
        snprintf(path, sizeof path, "%s/root", g_img);
        if (!ok || rename(tmp, path) != 0)
            die("cannot write the image root", path);
    }
    unlock_image();
}

#define RESOLVE(name) real_##name = (__typeof__(real_##name))dlsym(RTLD_NEXT, #name)

static void init(void)
{
    RESOLVE(open); RESOLVE(open64); RESOLVE(openat); RESOLVE(openat64); RESOLVE(creat); RESOLVE(creat64);
    RESOLVE(mkdir); RESOLVE(mkdirat); RESOLVE(write); RESOLVE(pwrite); RESOLVE(pwrite64); RESOLVE(writev);
    RESOLVE(pwritev); RESOLVE(pwritev64); RESOLVE(pwritev2); RESOLVE(pwritev64v2); RESOLVE(fsync);
    RESOLVE(fdatasync); RESOLVE(syncfs); RESOLVE(sync);
    if (!real_openat || !real_write || !real_mkdir)
        die("dlsym(RTLD_NEXT) found no openat/write/mkdir", NULL);

    const char *dir = getenv("POWERLOSS_DIR"), *durable = getenv("POWERLOSS_DURABLE");
    struct stat st;
    if (!dir || !*dir)
        return; /* not configured: pass everything through */
    if (!durable || !*durable)
        die("POWERLOSS_DIR is set but POWERLOSS_DURABLE is not", NULL);
    if (!realpath(dir, g_dir) || stat(g_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        die("POWERLOSS_DIR is not a directory", dir);
    if (strcmp(g_dir, "/") == 0)
        die("POWERLOSS_DIR must not be /", dir);
    g_dirlen = strlen(g_dir);
    g_dev = st.st_dev;
    if (real_mkdir(durable, 0755) != 0 && errno != EEXIST)
        die("cannot create POWERLOSS_DURABLE", durable);
    if (!realpath(durable, g_durable))
        die("POWERLOSS_DURABLE is not usable", durable);
    if (is_under(g_durable))
        die("POWERLOSS_DURABLE must not be inside POWERLOSS_DIR", durable);
    if (strlen(g_durable) + 64 > PATH_MAX)
        die("POWERLOSS_DURABLE is too long", durable);
    snprintf(g_img, sizeof g_img, "%s/img", g_durable);
    pthread_atfork(atfork_prepare, atfork_release, atfork_release);
    g_active = 1;
    init_image();
}

static inline void ensure(void) { pthread_once(&g_once, init); }

__attribute__((constructor)) static void powerloss_ctor(void) { ensure(); }

#define MISSING(fn)        \
    do {                   \
        if (!(fn)) {       \
            errno = ENOSYS; \
            return -1;     \
        }                  \
    } while (0)

/* ------------------------------------------------------------------ creation */

static int needs_mode(int flags) { return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE; }

/* Did the path not exist before an O_CREAT open? (Checked before the call; follows symlinks as
 * open does.) */
static int will_create(int dirfd, const char *path, int flags)
{
    struct stat st;
    int saved = errno, missing;
    if (!g_active || !(flags & O_CREAT))
        return 0;
    missing = fstatat(dirfd, path, &st, 0) != 0 && errno == ENOENT;
    errno = saved;
    return missing;
}

#define OPEN_BODY(call, dirfd)                           \
    mode_t mode = 0;                                     \
    if (needs_mode(flags)) {                             \
        va_list ap;                                      \
        va_start(ap, flags);                             \
        mode = (mode_t)va_arg(ap, int);                  \
        va_end(ap);                                      \
    }                                                    \
    ensure();                                            \
    int fresh = will_create((dirfd), path, flags);       \
    int fd = (call);                                     \
    if (fd >= 0 && fresh)                                \
        forget_new(fd);                                  \
    return fd;

EXPORT int open(const char *path, int flags, ...) { OPEN_BODY(real_open(path, flags, mode), AT_FDCWD) }
EXPORT int open64(const char *path, int flags, ...) { OPEN_BODY(real_open64(path, flags, mode), AT_FDCWD) }
EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
    OPEN_BODY(real_openat(dirfd, path, flags, mode), dirfd)
}
EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
    OPEN_BODY(real_openat64(dirfd, path, flags, mode), dirfd)
}

EXPORT int creat(const char *path, mode_t mode)
{
    ensure();
    MISSING(real_creat);
    int fresh = will_create(AT_FDCWD, path, O_CREAT);
    int fd = real_creat(path, mode);
    if (fd >= 0 && fresh)
        forget_new(fd);
    return fd;
}

EXPORT int creat64(const char *path, mode_t mode)
{
    ensure();
    MISSING(real_creat64);
    int fresh = will_create(AT_FDCWD, path, O_CREAT);
    int fd = real_creat64(path, mode);
    if (fd >= 0 && fresh)
        forget_new(fd);
    return fd;
}

static void forget_new_dir(int dirfd, const char *path)
{
    int saved = errno;
    int fd = real_openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        forget_new(fd);
        close(fd);
    }
    errno = saved;
}

EXPORT int mkdir(const char *path, mode_t mode)
{
    ensure();
    int r = real_mkdir(path, mode);
    if (r == 0 && g_active)
        forget_new_dir(AT_FDCWD, path);
    return r;
}

EXPORT int mkdirat(int dirfd, const char *path, mode_t mode)
{
    ensure();
    MISSING(real_mkdirat);
    int r = real_mkdirat(dirfd, path, mode);
    if (r == 0 && g_active)
        forget_new_dir(dirfd, path);
    return r;
}

/* ------------------------------------------------------------------ writes (O_SYNC / O_DSYNC) */

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
    ensure();
    ssize_t r = real_write(fd, buf, n);
    after_write(fd, r, 0);
    return r;
}

EXPORT ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    ensure();
    MISSING(real_pwrite);
    ssize_t r = real_pwrite(fd, buf, n, off);
    after_write(fd, r, 0);
    return r;
}

EXPORT ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    ensure();
    MISSING(real_pwrite64);
    ssize_t r = real_pwrite64(fd, buf, n, off);
    after_write(fd, r, 0);
    return r;
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    ensure();
    MISSING(real_writev);
    ssize_t r = real_writev(fd, iov, cnt);
    after_write(fd, r, 0);
    return r;
}

EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    ensure();
    MISSING(real_pwritev);
    ssize_t r = real_pwritev(fd, iov, cnt, off);
    after_write(fd, r, 0);
    return r;
}

EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off)
{
    ensure();
    MISSING(real_pwritev64);
    ssize_t r = real_pwritev64(fd, iov, cnt, off);
    after_write(fd, r, 0);
    return r;
}

#if defined(RWF_DSYNC) && defined(RWF_SYNC)
#define RWF_DURABLE (RWF_DSYNC | RWF_SYNC)
#else
#define RWF_DURABLE 0
#endif

EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    ensure();
    MISSING(real_pwritev2);
    ssize_t r = real_pwritev2(fd, iov, cnt, off, flags);
    after_write(fd, r, flags & RWF_DURABLE);
    return r;
}

EXPORT ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off64_t off, int flags)
{
    ensure();
    MISSING(real_pwritev64v2);
    ssize_t r = real_pwritev64v2(fd, iov, cnt, off, flags);
    after_write(fd, r, flags & RWF_DURABLE);
    return r;
}

/* ------------------------------------------------------------------ sync points */

EXPORT int fsync(int fd)
{
    ensure();
    MISSING(real_fsync);
    int r = real_fsync(fd);
    if (r == 0)
        after_sync(fd);
    return r;
}

EXPORT int fdatasync(int fd)
{
    ensure();
    MISSING(real_fdatasync);
    int r = real_fdatasync(fd);
    if (r == 0)
        after_sync(fd);
    return r;
}

EXPORT int syncfs(int fd)
{
    struct stat st;
    ensure();
    MISSING(real_syncfs);
    int r = real_syncfs(fd);
    if (r == 0 && g_active && fstat(fd, &st) == 0 && st.st_dev == g_dev) {
        int saved = errno;
        lock_image();
        record_tree();
        unlock_image();
        errno = saved;
    }
    return r;
}

EXPORT void sync(void)
{
    ensure();
    if (real_sync)
        real_sync();
    if (g_active) {
        int saved = errno;
        lock_image();
        record_tree();
        unlock_image();
        errno = saved;
    }
}
