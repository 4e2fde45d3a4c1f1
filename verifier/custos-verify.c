/*
 * custos-verify — checks a Custos evidence package offline.
 *
 *   cc -O2 -o custos-verify custos-verify.c -lcrypto
 *   ./custos-verify PACKAGE.zip      (or the unpacked directory)
 *
 * One file, OpenSSL's libcrypto and nothing else: no database, no data
 * directory, no Custos library. It checks, in this order, and stops at the
 * first thing that does not hold, naming it (exit 1):
 *
 *   1. the BagIt bag: bagit.txt, every line of manifest-sha256.txt and
 *      tagmanifest-sha256.txt, no payload file the manifest does not list,
 *      Payload-Oxum;
 *   2. the segments: each segment's plaintext rebuilt from the packets in
 *      data/packets.pcapng, its SHA-256, and the hash chain over every
 *      segment of the recording from its genesis (data/meta) to its sealed
 *      head;
 *   3. the custody log: each audit entry's hash, the links between
 *      consecutive entries, the seal's entry naming the sealed head;
 *   4. the signatures: the statement (which binds the payload manifest, the
 *      segments' chain values and the custody entries) and the audit
 *      checkpoint, with the installation's public key.
 *
 * Exit 0: everything holds. 1: something does not (named). 2: the package
 * cannot be read at all. The format is in SPEC.md beside this file.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------- reporting */

static int checks;

static void ok(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("ok    ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    checks++;
}

/* The first thing that does not hold: said, and the end. */
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL  ");
    vprintf(fmt, ap);
    printf("\nverdict: NOT VERIFIED (%d checks held before this one)\n", checks);
    va_end(ap);
    exit(1);
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "custos-verify: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

/* ----------------------------------------------------------------- files */

typedef struct {
    char *name; /* relative to the bag, '/' separated */
    const unsigned char *data;
    size_t len;
} vfile;

static vfile *files;
static size_t nfiles;

#define FILES_MAX 10000 /* a package holds a few dozen */

static void add_file(const char *name, const unsigned char *data, size_t len)
{
    if (nfiles == FILES_MAX)
        fail("more than %d files: not a Custos package", FILES_MAX);
    files = xrealloc(files, (nfiles + 1) * sizeof(*files));
    files[nfiles].name = strdup(name);
    files[nfiles].data = data;
    files[nfiles].len = len;
    if (!files[nfiles].name)
        die("out of memory");
    nfiles++;
}

/* A name a bag may hold: relative, '/'-separated, no empty, "." or ".."
 * part, no backslash or control character; and no two alike, even to a
 * file system that ignores case. Otherwise what is checked here might not
 * be what an unpacker writes. */
static void check_names(void)
{
    for (size_t i = 0; i < nfiles; i++) {
        const char *n = files[i].name;
        int bad = n[0] == '\0' || n[0] == '/' || strstr(n, "//") || strchr(n, '\\') ||
                  n[strlen(n) - 1] == '/';
        for (const char *p = n; *p && !bad; p++)
            bad = (unsigned char)*p < 0x20 || *p == 0x7f;
        for (const char *part = n; *part && !bad;) {
            size_t l = strcspn(part, "/");
            bad = (l == 1 && part[0] == '.') || (l == 2 && part[0] == '.' && part[1] == '.');
            part += l + (part[l] == '/');
        }
        if (bad)
            fail("%s: a file name a bag may not hold", n);
        for (size_t j = 0; j < i; j++)
            if (strcasecmp(files[j].name, n) == 0)
                fail("%s: in the package twice (as %s too)", n, files[j].name);
    }
}

static const vfile *find_file(const char *name)
{
    for (size_t i = 0; i < nfiles; i++)
        if (strcmp(files[i].name, name) == 0)
            return &files[i];
    return NULL;
}

static const vfile *need_file(const char *name)
{
    const vfile *f = find_file(name);
    if (!f)
        fail("%s: missing from the package", name);
    return f;
}

static const unsigned char *map_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        die("%s: %s", path, strerror(errno));
    *len = (size_t)st.st_size;
    if (*len == 0) {
        close(fd);
        return (const unsigned char *)"";
    }
    void *p = mmap(NULL, *len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        die("%s: %s", path, strerror(errno));
    return p;
}

static size_t dir_prefix;

static int dir_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type == FTW_F && S_ISREG(st->st_mode)) {
        size_t len;
        const unsigned char *p = map_file(path, &len);
        add_file(path + dir_prefix, p, len);
    } else if (type == FTW_SL || (type == FTW_F && !S_ISREG(st->st_mode))) {
        fail("%s: not a regular file", path + dir_prefix);
    } else if (type == FTW_DNR || type == FTW_NS) {
        die("%s: cannot be read", path);
    }
    return 0;
}

static void load_dir(const char *dir)
{
    char *root = strdup(dir);
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/')
        root[--n] = '\0';
    dir_prefix = n + 1;
    if (nftw(root, dir_entry, 32, FTW_PHYS) != 0)
        die("%s: %s", root, strerror(errno));
    free(root);
}

static uint32_t le16(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static uint32_t le32(const unsigned char *p)
{
    return le16(p) | le16(p + 2) << 16;
}

static uint64_t le64(const unsigned char *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* A ZIP of stored entries (what Custos writes): read through its central
 * directory, ZIP64 included. */
static void load_zip(const char *path)
{
    size_t len;
    const unsigned char *z = map_file(path, &len);
    if (len < 22)
        die("%s: not a ZIP archive", path);
    size_t eocd = len - 22, stop = len > 65557 ? len - 65557 : 0;
    while (le32(z + eocd) != 0x06054b50) {
        if (eocd == stop)
            die("%s: not a ZIP archive (no end of central directory)", path);
        eocd--;
    }
    uint64_t count = le16(z + eocd + 10), cd_size = le32(z + eocd + 12);
    uint64_t cd_off = le32(z + eocd + 16);
    if (count == 0xffff || cd_off == 0xffffffff || cd_size == 0xffffffff) {
        if (eocd < 20 || le32(z + eocd - 20) != 0x07064b50)
            die("%s: ZIP64 locator missing", path);
        uint64_t at = le64(z + eocd - 12);
        if (len < 56 || at > len - 56 || le32(z + at) != 0x06064b50)
            die("%s: ZIP64 end of central directory missing", path);
        count = le64(z + at + 32);
        cd_size = le64(z + at + 40);
        cd_off = le64(z + at + 48);
    }
    if (cd_off > len || cd_size > len - cd_off)
        die("%s: the central directory lies outside the file", path);
    size_t p = (size_t)cd_off;
    char *first_top = NULL;
    size_t first_entry = nfiles;
    for (uint64_t i = 0; i < count; i++) {
        if (p + 46 > len || le32(z + p) != 0x02014b50)
            die("%s: central directory entry %llu is damaged", path, (unsigned long long)i);
        uint32_t method = le16(z + p + 10), flags = le16(z + p + 8);
        uint64_t csize = le32(z + p + 20), usize = le32(z + p + 24);
        uint32_t nlen = le16(z + p + 28), xlen = le16(z + p + 30), clen = le16(z + p + 32);
        uint64_t loff = le32(z + p + 42);
        if (p + 46 + nlen + xlen + clen > len)
            die("%s: central directory entry %llu is damaged", path, (unsigned long long)i);
        char *name = xmalloc(nlen + 1);
        memcpy(name, z + p + 46, nlen);
        name[nlen] = '\0';
        if (strlen(name) != nlen)
            fail("an entry name with a NUL byte in it (%s...)", name);
        size_t xend = p + 46 + nlen + xlen;
        for (size_t x = p + 46 + nlen; x + 4 <= xend;) {
            uint32_t id = le16(z + x), sz = le16(z + x + 2);
            size_t v = x + 4;
            if (sz > xend - v)
                die("%s: %s: an extra field runs past its entry", path, name);
            if (id == 1) {
                if (usize == 0xffffffff && v + 8 <= x + 4 + sz)
                    usize = le64(z + v), v += 8;
                if (csize == 0xffffffff && v + 8 <= x + 4 + sz)
                    csize = le64(z + v), v += 8;
                if (loff == 0xffffffff && v + 8 <= x + 4 + sz)
                    loff = le64(z + v), v += 8;
            }
            x += 4 + sz;
        }
        p += 46 + nlen + xlen + clen;
        if (nlen > 0 && name[nlen - 1] == '/') { /* a directory */
            free(name);
            continue;
        }
        if (flags & 1)
            die("%s: %s is encrypted", path, name);
        if (method != 0 || csize != usize)
            die("%s: %s is compressed; custos-verify reads stored ZIP entries (what Custos "
                "writes): unpack the archive and give the directory instead",
                path, name);
        if (len < 30 || loff > len - 30 || le32(z + loff) != 0x04034b50)
            die("%s: %s: local header missing", path, name);
        uint32_t lnlen = le16(z + loff + 26);
        uint64_t data = loff + 30 + lnlen + le16(z + loff + 28);
        if (data > len || lnlen != nlen || memcmp(z + loff + 30, name, nlen) != 0 ||
            le16(z + loff + 8) != 0)
            fail("%s: its local header does not match the central directory", name);
        if (data > len || usize > len - data)
            die("%s: %s lies outside the archive", path, name);
        if (strstr(name, "..") || name[0] == '/')
            fail("%s: an entry name that leaves the bag", name);
        add_file(name, z + data, (size_t)usize);
        char *slash = strchr(name, '/');
        if (!first_top && slash)
            first_top = strndup(name, (size_t)(slash - name) + 1);
        free(name);
    }
    /* A bag zipped with its directory: names below that directory. */
    size_t top = first_top ? strlen(first_top) : 0;
    for (size_t i = first_entry; top && i < nfiles; i++)
        if (strncmp(files[i].name, first_top, top) != 0)
            top = 0;
    for (size_t i = first_entry; top && i < nfiles; i++)
        memmove(files[i].name, files[i].name + top, strlen(files[i].name + top) + 1);
    free(first_top);
}

/* ---------------------------------------------------------------- hashes */

static void sha256(const void *data, size_t len, unsigned char out[32])
{
    if (EVP_Digest(data, len, out, NULL, EVP_sha256(), NULL) != 1)
        die("SHA-256 failed");
}

static void hex(const unsigned char *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

static int unhex(const char *s, unsigned char *out, size_t n)
{
    if (!s || strlen(s) != 2 * n)
        return 0;
    for (size_t i = 0; i < 2 * n; i++) {
        char c = s[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0)
            return 0;
        out[i / 2] = (unsigned char)(i % 2 ? out[i / 2] | v : v << 4);
    }
    return 1;
}

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

/* ------------------------------------------------------------------ JSON */

enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct jv {
    int type;
    int boolean;
    long long num; /* integers only: every number Custos writes is one */
    char *str;
    size_t n;
    struct jv *items; /* array items, or object values */
    char **keys;      /* object keys */
} jv;

typedef struct {
    const char *start, *p, *end, *file;
    int depth;
} jparser;

static void jfail(jparser *j, const char *what)
{
    fail("%s: not valid JSON (%s at byte %ld)", j->file, what, (long)(j->p - j->start));
}

static void jspace(jparser *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t'))
        j->p++;
}

static void put_utf8(char **out, unsigned cp)
{
    char *o = *out;
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xc0 | cp >> 6);
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xe0 | cp >> 12);
        *o++ = (char)(0x80 | (cp >> 6 & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *o++ = (char)(0xf0 | cp >> 18);
        *o++ = (char)(0x80 | (cp >> 12 & 0x3f));
        *o++ = (char)(0x80 | (cp >> 6 & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    }
    *out = o;
}

static unsigned hex4(jparser *j)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++, j->p++) {
        char c = j->p < j->end ? *j->p : 0;
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            jfail(j, "bad \\u escape");
        v = v << 4 | (unsigned)d;
    }
    return v;
}

static char *jstring(jparser *j)
{
    if (*j->p != '"')
        jfail(j, "string expected");
    j->p++;
    const char *start = j->p;
    while (j->p < j->end && *j->p != '"')
        j->p += *j->p == '\\' ? 2 : 1;
    if (j->p >= j->end)
        jfail(j, "unterminated string");
    char *out = xmalloc((size_t)(j->p - start) * 2 + 1), *o = out;
    j->p = start;
    while (*j->p != '"') {
        unsigned char c = (unsigned char)*j->p++;
        if (c < 0x20)
            jfail(j, "control character in a string");
        if (c != '\\') {
            *o++ = (char)c;
            continue;
        }
        char e = *j->p++;
        switch (e) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp = hex4(j);
            if (cp >= 0xd800 && cp < 0xdc00) {
                if (j->p + 6 > j->end || j->p[0] != '\\' || j->p[1] != 'u')
                    jfail(j, "lone surrogate");
                j->p += 2;
                unsigned lo = hex4(j);
                if (lo < 0xdc00 || lo >= 0xe000)
                    jfail(j, "bad surrogate pair");
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                jfail(j, "lone surrogate");
            }
            put_utf8(&o, cp);
            break;
        }
        default: jfail(j, "bad escape");
        }
    }
    j->p++;
    *o = '\0';
    return out;
}

static void jvalue(jparser *j, jv *v)
{
    memset(v, 0, sizeof(*v));
    if (++j->depth > 64)
        jfail(j, "nested too deep");
    jspace(j);
    if (j->p >= j->end)
        jfail(j, "value expected");
    char c = *j->p;
    if (c == '{' || c == '[') {
        v->type = c == '{' ? J_OBJ : J_ARR;
        j->p++;
        jspace(j);
        size_t cap = 0;
        if (j->p < j->end && *j->p == (c == '{' ? '}' : ']')) {
            j->p++;
        } else {
            for (;;) {
                if (v->n == cap) {
                    cap = cap ? cap * 2 : 8;
                    v->items = xrealloc(v->items, cap * sizeof(*v->items));
                    if (c == '{')
                        v->keys = xrealloc(v->keys, cap * sizeof(*v->keys));
                }
                if (c == '{') {
                    jspace(j);
                    v->keys[v->n] = jstring(j);
                    jspace(j);
                    if (j->p >= j->end || *j->p++ != ':')
                        jfail(j, "':' expected");
                }
                jvalue(j, &v->items[v->n++]);
                jspace(j);
                if (j->p < j->end && *j->p == ',') {
                    j->p++;
                    continue;
                }
                if (j->p < j->end && *j->p == (c == '{' ? '}' : ']')) {
                    j->p++;
                    break;
                }
                jfail(j, "',' or end expected");
            }
        }
    } else if (c == '"') {
        v->type = J_STR;
        v->str = jstring(j);
    } else if (c == 't' && j->end - j->p >= 4 && !memcmp(j->p, "true", 4)) {
        v->type = J_BOOL, v->boolean = 1, j->p += 4;
    } else if (c == 'f' && j->end - j->p >= 5 && !memcmp(j->p, "false", 5)) {
        v->type = J_BOOL, j->p += 5;
    } else if (c == 'n' && j->end - j->p >= 4 && !memcmp(j->p, "null", 4)) {
        v->type = J_NULL, j->p += 4;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        v->type = J_NUM;
        char *endp;
        errno = 0;
        v->num = strtoll(j->p, &endp, 10);
        if (errno || endp == j->p || (endp < j->end && (*endp == '.' || *endp == 'e')))
            jfail(j, "an integer expected");
        j->p = endp;
    } else {
        jfail(j, "value expected");
    }
    j->depth--;
}

static jv *parse_json(const char *name)
{
    const vfile *f = need_file(name);
    char *text = xmalloc(f->len + 1);
    memcpy(text, f->data, f->len);
    text[f->len] = '\0';
    if (strlen(text) != f->len)
        fail("%s: not valid JSON (a NUL byte)", name);
    jparser j = {.start = text, .p = text, .end = text + f->len, .file = name};
    jv *v = xmalloc(sizeof(*v));
    jvalue(&j, v);
    jspace(&j);
    if (j.p != j.end)
        jfail(&j, "text after the value");
    return v; /* (text is kept: the strings were copied) */
}

static const jv *get(const jv *o, const char *key)
{
    for (size_t i = 0; o && o->type == J_OBJ && i < o->n; i++)
        if (strcmp(o->keys[i], key) == 0)
            return &o->items[i];
    return NULL;
}

static const char *get_str(const jv *o, const char *key, const char *file)
{
    const jv *v = get(o, key);
    if (!v || v->type != J_STR)
        fail("%s: \"%s\" missing or not a string", file, key);
    return v->str;
}

static long long get_num(const jv *o, const char *key, const char *file)
{
    const jv *v = get(o, key);
    if (!v || v->type != J_NUM)
        fail("%s: \"%s\" missing or not an integer", file, key);
    return v->num;
}

static void get_hash(const jv *o, const char *key, const char *file, unsigned char out[32])
{
    if (!unhex(get_str(o, key, file), out, 32))
        fail("%s: \"%s\" is not a SHA-256 in hex", file, key);
}

/* ------------------------------------------------------------ 1. the bag */

static int is_tag_manifest_free(const char *name)
{
    return strncmp(name, "data/", 5) != 0;
}

/* Every line "<sha256>  <path>" of @p manifest; returns how many. */
static size_t check_manifest(const char *manifest, int payload)
{
    const vfile *m = need_file(manifest);
    char *text = strndup((const char *)m->data, m->len);
    size_t lines = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        size_t n = strlen(line);
        if (n && line[n - 1] == '\r')
            line[--n] = '\0';
        if (n == 0)
            continue;
        char *sp = strpbrk(line, " \t");
        unsigned char want[32], got[32];
        if (!sp || (size_t)(sp - line) != 64 || !unhex(strndup(line, 64), want, 32))
            fail("%s: line %zu is not \"<sha256>  <file>\"", manifest, lines + 1);
        char *name = sp;
        while (*name == ' ' || *name == '\t')
            name++;
        if (*name == '*')
            name++;
        if (payload && strncmp(name, "data/", 5) != 0)
            fail("%s: %s is not a payload file (data/...)", manifest, name);
        const vfile *f = find_file(name);
        if (!f)
            fail("%s: listed in %s but missing from the package", name, manifest);
        sha256(f->data, f->len, got);
        if (memcmp(want, got, 32) != 0)
            fail("%s: its SHA-256 does not match %s (the file was changed)", name, manifest);
        lines++;
    }
    free(text);
    return lines;
}

static int listed(const char *manifest, const char *name)
{
    const vfile *m = need_file(manifest);
    size_t n = strlen(name);
    for (const char *p = (const char *)m->data, *end = p + m->len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (len >= n + 66 && memcmp(p + len - n, name, n) == 0 &&
            (p[len - n - 1] == ' ' || p[len - n - 1] == '*'))
            return 1;
        p += len + 1;
    }
    return 0;
}

static void check_bag(void)
{
    const vfile *b = need_file("bagit.txt");
    if (!memmem(b->data, b->len, "BagIt-Version: 1.0", 18) ||
        !memmem(b->data, b->len, "Tag-File-Character-Encoding: UTF-8", 34))
        fail("bagit.txt: not a BagIt 1.0 declaration");
    size_t tags = check_manifest("tagmanifest-sha256.txt", 0);
    size_t payload = check_manifest("manifest-sha256.txt", 1);
    unsigned long long bytes = 0, count = 0;
    for (size_t i = 0; i < nfiles; i++) {
        if (is_tag_manifest_free(files[i].name)) {
            if (strcmp(files[i].name, "tagmanifest-sha256.txt") != 0 &&
                !listed("tagmanifest-sha256.txt", files[i].name))
                fail("%s: a file that tagmanifest-sha256.txt does not list", files[i].name);
            continue;
        }
        if (!listed("manifest-sha256.txt", files[i].name))
            fail("%s: a payload file that manifest-sha256.txt does not list", files[i].name);
        bytes += files[i].len;
        count++;
    }
    const vfile *info = need_file("bag-info.txt");
    char *info_text = strndup((const char *)info->data, info->len);
    char *oxum = info_text ? strstr(info_text, "Payload-Oxum: ") : NULL;
    unsigned long long ob = 0, oc = 0;
    if (!oxum || sscanf(oxum + 14, "%llu.%llu", &ob, &oc) != 2 || ob != bytes || oc != count)
        fail("bag-info.txt: Payload-Oxum does not match the payload (%llu.%llu)", bytes, count);
    free(info_text);
    ok("bag: BagIt 1.0, %zu payload files (%llu bytes) and %zu tag files match their manifests",
       payload, bytes, tags);
}

/* ------------------------------------------------------- 2. the segments */

typedef struct {
    unsigned long long seg;
    unsigned lost;
    uint64_t ts;
    const unsigned char *rtp;
    size_t len;
} packet;

static packet *packets;
static size_t npackets;

static void load_pcapng(const char *dir)
{
    char name[128];
    snprintf(name, sizeof(name), "%spackets.pcapng", dir);
    free(packets);
    packets = NULL;
    npackets = 0;
    const vfile *f = need_file(name);
    const unsigned char *p = f->data;
    size_t off = 0, cap = 0;
    int tsresol_ok = 0, have_if = 0;
    while (off < f->len) {
        if (f->len - off < 12)
            fail("%s: a block cut short at byte %zu", name, off);
        uint32_t type = le32(p + off), blen = le32(p + off + 4);
        if (off == 0 && (type != 0x0A0D0D0A || le32(p + 8) != 0x1A2B3C4D))
            fail("%s: not a little-endian pcapng file", name);
        if (blen < 12 || blen % 4 || blen > f->len - off || le32(p + off + blen - 4) != blen)
            fail("%s: a damaged block at byte %zu", name, off);
        const unsigned char *b = p + off;
        if (type == 1) {
            if (blen < 20)
                fail("%s: an interface block at byte %zu is too short", name, off);
            if (have_if++)
                fail("%s: more than one interface", name);
            if (le16(b + 8) != 101)
                fail("%s: the interface is not raw IP (linktype 101)", name);
            tsresol_ok = 1; /* default: microseconds */
            for (size_t o = 16; o + 4 <= blen - 4;) {
                uint32_t code = le16(b + o), l = le16(b + o + 2);
                if (code == 0)
                    break;
                if (code == 9 && l == 1 && b[o + 4] != 6)
                    tsresol_ok = 0;
                o += 4 + ((l + 3) & ~3u);
            }
            if (!tsresol_ok)
                fail("%s: timestamps are not in microseconds", name);
        } else if (type == 6) {
            if (blen < 32 + 28)
                fail("%s: a packet block at byte %zu is too short", name, off);
            if (!have_if || le32(b + 8) != 0)
                fail("%s: a packet at byte %zu of no interface", name, off);
            uint32_t caplen = le32(b + 20);
            if (28 + (((uint64_t)caplen + 3) & ~(uint64_t)3) > (uint64_t)blen - 4 || caplen < 28 ||
                le32(b + 24) != caplen)
                fail("%s: a packet block at byte %zu is damaged", name, off);
            const unsigned char *ip = b + 28;
            if (ip[0] != 0x45 || ip[9] != 17)
                fail("%s: the packet at byte %zu is not IPv4/UDP", name, off);
            packet k = {.ts = (uint64_t)le32(b + 12) << 32 | le32(b + 16),
                        .rtp = ip + 28,
                        .len = caplen - 28};
            int have_comment = 0;
            for (size_t o = 28 + ((caplen + 3) & ~3u); o + 4 <= blen - 4;) {
                uint32_t code = le16(b + o), l = le16(b + o + 2);
                if (code == 0)
                    break;
                if (o + 4 + l > blen - 4)
                    fail("%s: a packet option at byte %zu runs past its block", name, off);
                if (code == 1 && l < 96) {
                    char c[100];
                    memcpy(c, b + o + 4, l);
                    c[l] = '\0';
                    char tail;
                    if (sscanf(c, "custos seg=%llu lost=%u%c", &k.seg, &k.lost, &tail) == 2)
                        have_comment = 1;
                }
                o += 4 + ((l + 3) & ~3u);
            }
            if (!have_comment)
                fail("%s: the packet at byte %zu has no \"custos seg=N lost=N\" comment", name,
                     off);
            if (npackets == cap)
                packets = xrealloc(packets, (cap = cap ? cap * 2 : 4096) * sizeof(*packets));
            packets[npackets++] = k;
        } else if (type != 0x0A0D0D0A || off != 0) {
            fail("%s: an unexpected block (type 0x%x) at byte %zu", name, type, off);
        }
        off += blen;
    }
    ok("packets: %zu RTP packets in %s", npackets, name);
}

typedef struct {
    char recording[37];
    long long count, first, last;
    unsigned char chain_before[32], chain_last[32], sealed_head[32];
    int sealed;
} segment_facts;

static void check_segments(const char *dir, segment_facts *sf)
{
    char name[128], meta_name[128], pcap_name[128];
    snprintf(name, sizeof(name), "%ssegments.json", dir);
    snprintf(meta_name, sizeof(meta_name), "%smeta", dir);
    snprintf(pcap_name, sizeof(pcap_name), "%spackets.pcapng", dir);
    jv *doc = parse_json(name);
    char label[80] = ""; /* "track <id> " for a capture's other track */
    if (strcmp(dir, "data/") != 0)
        snprintf(label, sizeof(label), "track %.36s ", dir + strlen("data/tracks/"));
    if (strcmp(get_str(doc, "format", name), "custos-segments-v1") != 0)
        fail("%s: not custos-segments-v1", name);
    const char *rec = get_str(doc, "recording", name);
    unsigned char id[16], meta_sha[32], want[32], c[32];
    if (strlen(rec) != 36)
        fail("%s: \"recording\" is not a UUID", name);
    snprintf(sf->recording, sizeof(sf->recording), "%s", rec);
    char compact[33];
    size_t k = 0;
    for (const char *q = rec; *q && k < 32; q++)
        if (*q != '-')
            compact[k++] = *q;
    compact[k] = '\0';
    if (!unhex(compact, id, 16))
        fail("%s: \"recording\" is not a UUID", name);
    const vfile *meta = need_file(meta_name);
    sha256(meta->data, meta->len, meta_sha);
    get_hash(doc, "meta_sha256", name, want);
    if (memcmp(meta_sha, want, 32) != 0)
        fail("%s: its SHA-256 is not the one the chain starts from", meta_name);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, "custos-chain-v1", 15);
    EVP_DigestUpdate(md, id, 16);
    EVP_DigestUpdate(md, meta_sha, 32);
    EVP_DigestFinal_ex(md, c, NULL);
    get_hash(doc, "genesis", name, want);
    if (memcmp(c, want, 32) != 0)
        fail("%s: the genesis is not SHA-256(\"custos-chain-v1\" || id || SHA-256(meta))", name);
    const jv *segs = get(doc, "segments");
    if (!segs || segs->type != J_ARR)
        fail("%s: \"segments\" missing", name);
    sf->count = get_num(doc, "count", name);
    sf->first = get_num(doc, "first_in_package", name);
    sf->last = get_num(doc, "last_in_package", name);
    if (sf->first < 0 || sf->first > sf->last || sf->last >= sf->count)
        fail("%s: the package's segments %lld..%lld are not in the recording", name, sf->first,
             sf->last);
    size_t next_packet = 0;
    unsigned long long rebuilt_bytes = 0;
    for (size_t i = 0; i < segs->n; i++) {
        const jv *s = &segs->items[i];
        long long idx = get_num(s, "index", name);
        if (idx != (long long)i)
            fail("%ssegment %zu: missing (segments.json lists %lld in its place)", label, i, idx);
        unsigned char h[32], chain[32];
        get_hash(s, "sha256", name, h);
        get_hash(s, "chain", name, chain);
        long long start = get_num(s, "start_us", name), end = get_num(s, "end_us", name);
        const jv *in = get(s, "in_package");
        int inside = in && in->type == J_BOOL && in->boolean;
        if (inside != ((long long)i >= sf->first && (long long)i <= sf->last))
            fail("%ssegment %zu: \"in_package\" disagrees with the package's range", label, i);
        if (inside) {
            unsigned char head[16], got[32];
            if (!unhex(get_str(s, "payload_header", name), head, 16) || memcmp(head, "CRTP", 4))
                fail("%ssegment %zu: its payload header is not a CRTP header", label, i);
            EVP_DigestInit_ex(md, EVP_sha256(), NULL);
            EVP_DigestUpdate(md, head, 16);
            long long count = 0;
            while (next_packet < npackets && packets[next_packet].seg == i) {
                const packet *pk = &packets[next_packet++];
                unsigned char rh[12];
                if (pk->len > 65535)
                    fail("%ssegment %zu: a packet longer than a record can hold", label, i);
                rh[0] = (unsigned char)(pk->len >> 8);
                rh[1] = (unsigned char)pk->len;
                rh[2] = (unsigned char)(pk->lost >> 8);
                rh[3] = (unsigned char)pk->lost;
                put_be64(rh + 4, pk->ts);
                EVP_DigestUpdate(md, rh, 12);
                EVP_DigestUpdate(md, pk->rtp, pk->len);
                rebuilt_bytes += 12 + pk->len;
                count++;
            }
            EVP_DigestFinal_ex(md, got, NULL);
            if (next_packet < npackets && packets[next_packet].seg <= i)
                fail("%s: packets of segment %llu out of order (after segment %zu)", pcap_name,
                     packets[next_packet].seg, i);
            if (count != get_num(s, "packets", name))
                fail("%ssegment %zu: %lld packets in %s, %lld in its header", label, i, count,
                     pcap_name, get_num(s, "packets", name));
            if (memcmp(got, h, 32) != 0)
                fail("%ssegment %zu: its packets do not hash to its SHA-256 (a packet was changed, "
                     "added or removed)",
                     label, i);
        }
        if (i == (size_t)sf->first)
            memcpy(sf->chain_before, c, 32);
        unsigned char link[56];
        put_be64(link, (uint64_t)i);
        put_be64(link + 8, (uint64_t)start);
        put_be64(link + 16, (uint64_t)end);
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        EVP_DigestUpdate(md, c, 32);
        EVP_DigestUpdate(md, h, 32);
        EVP_DigestUpdate(md, link, 24);
        EVP_DigestFinal_ex(md, c, NULL);
        if (memcmp(c, chain, 32) != 0)
            fail("%ssegment %zu: the hash chain breaks here (its chain value does not follow "
                 "from segment %lld's)",
                 label, i, (long long)i - 1);
        if (i == (size_t)sf->last)
            memcpy(sf->chain_last, c, 32);
    }
    EVP_MD_CTX_free(md);
    if ((long long)segs->n != sf->count)
        fail("%ssegment %zu: missing (%s lists %zu segments, the recording has %lld)", label,
             segs->n < (size_t)sf->count ? segs->n : (size_t)sf->count, name, segs->n, sf->count);
    if (next_packet != npackets)
        fail("%s: packets of segment %llu, which the package does not hold", pcap_name,
             packets[next_packet].seg);
    const jv *sealed = get(doc, "sealed_head");
    sf->sealed = sealed && sealed->type == J_STR;
    if (sf->sealed) {
        get_hash(doc, "sealed_head", name, sf->sealed_head);
        if (memcmp(c, sf->sealed_head, 32) != 0)
            fail("%sthe seal: the chain over the %lld segments does not end at the sealed head",
                 label, sf->count);
    }
    ok("%ssegments: %lld..%lld rebuilt from the packets (%llu bytes), each matching its SHA-256",
       label, sf->first, sf->last, rebuilt_bytes);
    ok("%schain: every link of the recording's %lld segments holds, from the genesis (%s)%s", label,
       sf->count, meta_name, sf->sealed ? " to the sealed head" : " (the recording is not sealed)");
}

/* ---------------------------------------------------- 3. the custody log */

static void field(EVP_MD_CTX *md, const char *s)
{
    size_t n = strlen(s);
    unsigned char len[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
                            (unsigned char)(n >> 8), (unsigned char)n};
    EVP_DigestUpdate(md, len, 4);
    EVP_DigestUpdate(md, s, n);
}

#define TRACKS_MAX 8 /* the recording and its capture's other tracks */

/* The track of @p object ("recording:<id> ..."), or -1. */
static int track_of(const segment_facts *sf, size_t n, const char *object)
{
    for (size_t t = 0; t < n; t++)
        if (strncmp(object, "recording:", 10) == 0 &&
            strncmp(object + 10, sf[t].recording, 36) == 0)
            return (int)t;
    return -1;
}

static const jv *check_custody(const segment_facts *sf, size_t ntracks, char *installation,
                               size_t inst_len)
{
    const char *name = "data/custody.json";
    jv *doc = parse_json(name);
    if (strcmp(get_str(doc, "format", name), "custos-custody-v1") != 0)
        fail("%s: not custos-custody-v1", name);
    snprintf(installation, inst_len, "%s", get_str(doc, "installation", name));
    const jv *entries = get(doc, "entries");
    if (!entries || entries->type != J_ARR)
        fail("%s: \"entries\" missing", name);
    char seal_want[TRACKS_MAX][200], head_hex[65];
    int seal_found[TRACKS_MAX] = {0};
    for (size_t t = 0; t < ntracks; t++) {
        hex(sf[t].sealed_head, 32, head_hex);
        snprintf(seal_want[t], sizeof(seal_want[t]), " segments=%lld head=%s", sf[t].count,
                 head_hex);
    }
    unsigned char genesis[32], prev_hash[32] = {0};
    char g[128];
    snprintf(g, sizeof(g), "custos-audit-v1:%s", installation);
    sha256(g, strlen(g), genesis);
    long long prev_seq = -1;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    for (size_t i = 0; i < entries->n; i++) {
        const jv *e = &entries->items[i];
        long long seq = get_num(e, "seq", name), ms = get_num(e, "at_ms", name);
        unsigned char prev[32], h[32], got[32], be[16];
        get_hash(e, "prev_hash", name, prev);
        get_hash(e, "hash", name, h);
        const char *object = get_str(e, "object", name);
        if (seq <= prev_seq)
            fail("custody entry %lld: out of order", seq);
        int track = track_of(sf, ntracks, object);
        if (track < 0)
            fail("custody entry %lld: not about recording %s%s", seq, sf->recording,
                 ntracks > 1 ? " or its capture's tracks" : "");
        if (seq == 1 && memcmp(prev, genesis, 32) != 0)
            fail("custody entry 1: does not start the installation's audit chain");
        if (prev_seq >= 0 && seq == prev_seq + 1 && memcmp(prev, prev_hash, 32) != 0)
            fail("custody entry %lld: does not link to entry %lld", seq, prev_seq);
        put_be64(be, (uint64_t)seq);
        put_be64(be + 8, (uint64_t)ms);
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        EVP_DigestUpdate(md, prev, 32);
        EVP_DigestUpdate(md, be, 16);
        field(md, get_str(e, "actor", name));
        field(md, get_str(e, "action", name));
        field(md, object);
        field(md, get_str(e, "outcome", name));
        field(md, get_str(e, "source", name));
        EVP_DigestFinal_ex(md, got, NULL);
        if (memcmp(got, h, 32) != 0)
            fail("custody entry %lld (%s): its hash does not match its fields (the entry was "
                 "changed)",
                 seq, get_str(e, "action", name));
        if (strcmp(get_str(e, "action", name), "recording.seal") == 0 &&
            strstr(object, seal_want[track]))
            seal_found[track] = 1;
        memcpy(prev_hash, h, 32);
        prev_seq = seq;
    }
    EVP_MD_CTX_free(md);
    for (size_t t = 0; t < ntracks; t++)
        if (sf[t].sealed && !seal_found[t])
            fail("%s%sthe seal: no recording.seal entry in the custody log names %lld segments "
                 "and the sealed head",
                 t ? "track " : "", t ? sf[t].recording : "", sf[t].count);
    ok("custody: %zu audit entries about the recording%s, each hash holding%s", entries->n,
       ntracks > 1 ? " and its capture's tracks" : "",
       sf->sealed ? "; the seals' entries name the sealed heads" : "");
    return entries;
}

/* ------------------------------------------------------ 4. the signatures */

static EVP_PKEY *load_key(void)
{
    const vfile *f = need_file("data/installation-key.pem");
    BIO *bio = BIO_new_mem_buf(f->data, (int)f->len);
    EVP_PKEY *key = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (!key || EVP_PKEY_get_id(key) != EVP_PKEY_ED25519)
        fail("data/installation-key.pem: not an Ed25519 public key");
    return key;
}

static int signature_ok(EVP_PKEY *key, const void *msg, size_t len, const unsigned char *sig,
                        size_t sig_len)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int good = md && EVP_DigestVerifyInit(md, NULL, NULL, NULL, key) == 1 &&
               EVP_DigestVerify(md, sig, sig_len, msg, len) == 1;
    EVP_MD_CTX_free(md);
    return good;
}

static size_t unbase64(const char *text, size_t n, unsigned char *out, size_t cap)
{
    while (n && (text[n - 1] == '\n' || text[n - 1] == '\r'))
        n--;
    if (n % 4 || n / 4 * 3 > cap + 2)
        return 0;
    unsigned char *tmp = xmalloc(n / 4 * 3 + 1);
    int got = EVP_DecodeBlock(tmp, (const unsigned char *)text, (int)n);
    if (got < 0) {
        free(tmp);
        return 0;
    }
    size_t len = (size_t)got;
    if (n && text[n - 1] == '=')
        len--;
    if (n > 1 && text[n - 2] == '=')
        len--;
    if (len > cap) {
        free(tmp);
        return 0;
    }
    memcpy(out, tmp, len);
    free(tmp);
    return len;
}

/* A track as the statement signed it ("segments" or an item of "tracks") against @p sf. */
static void check_signed_track(const jv *segs, const jv *sealed, const segment_facts *sf,
                               const char *name)
{
    unsigned char before[32], last[32], want[32];
    get_hash(segs, "chain_before", name, before);
    get_hash(segs, "chain_last", name, last);
    if (get_num(segs, "first", name) != sf->first || get_num(segs, "last", name) != sf->last ||
        get_num(segs, "count", name) != sf->count || memcmp(before, sf->chain_before, 32) ||
        memcmp(last, sf->chain_last, 32))
        fail("recording %s: its segments are not the ones the statement signed", sf->recording);
    if ((sealed && sealed->type == J_STR) != sf->sealed)
        fail("recording %s: the seal is not the one the statement signed", sf->recording);
    if (sf->sealed) {
        if (!unhex(sealed->str, want, 32) || memcmp(want, sf->sealed_head, 32) != 0)
            fail("recording %s: the sealed head is not the one the statement signed",
                 sf->recording);
    }
}

static void check_statement(EVP_PKEY *key, const segment_facts *sf, size_t ntracks,
                            const jv *custody, const char *installation)
{
    const char *name = "statement.json";
    const vfile *st = need_file(name), *sigf = need_file("statement.sig");
    unsigned char sig[64];
    if (unbase64((const char *)sigf->data, sigf->len, sig, sizeof(sig)) != 64)
        fail("statement.sig: not a base64 Ed25519 signature");
    if (!signature_ok(key, st->data, st->len, sig, 64))
        fail("statement.json: its signature (statement.sig) does not verify with "
             "data/installation-key.pem");
    jv *doc = parse_json(name);
    if (strcmp(get_str(doc, "format", name), "custos-statement-v1") != 0)
        fail("%s: not custos-statement-v1", name);
    if (strcmp(get_str(doc, "recording", name), sf->recording) != 0)
        fail("%s: signed for another recording", name);
    if (strcmp(get_str(doc, "installation", name), installation) != 0)
        fail("%s: signed by another installation than the custody log's", name);
    unsigned char want[32], got[32];
    const vfile *m = need_file("manifest-sha256.txt");
    sha256(m->data, m->len, got);
    get_hash(doc, "manifest_sha256", name, want);
    if (memcmp(want, got, 32) != 0)
        fail("manifest-sha256.txt: not the payload manifest the statement signed (payload "
             "files were changed and the manifest rewritten)");
    /* The tag files the statement binds besides the manifest: the bag's
     * declaration and description, and this verifier's own source. */
    static const char *const tags[] = {"bagit.txt", "bag-info.txt", "verifier/custos-verify.c",
                                       "verifier/SPEC.md"};
    const jv *tag_files = get(doc, "tag_files");
    for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++) {
        const vfile *t = need_file(tags[i]);
        unsigned char h[32];
        get_hash(tag_files, tags[i], name, want);
        sha256(t->data, t->len, h);
        if (memcmp(h, want, 32) != 0)
            fail("%s: not the file the statement signed", tags[i]);
    }
    check_signed_track(get(doc, "segments"), get(doc, "sealed_head"), &sf[0], name);
    const jv *tracks = get(doc, "tracks");
    size_t signed_tracks = tracks && tracks->type == J_ARR ? tracks->n : 0;
    if (signed_tracks != ntracks - 1)
        fail("data/tracks/: %zu other tracks in the package, the statement signed %zu", ntracks - 1,
             signed_tracks);
    for (size_t t = 0; t < signed_tracks; t++) {
        const jv *tr = &tracks->items[t];
        const char *rec = get_str(tr, "recording", name);
        size_t k = 1;
        while (k < ntracks && strcmp(sf[k].recording, rec) != 0)
            k++;
        if (k == ntracks)
            fail("track %s: signed in the statement, missing from the package", rec);
        check_signed_track(get(tr, "segments"), get(tr, "sealed_head"), &sf[k], name);
    }
    const jv *list = get(doc, "custody");
    if (!list || list->type != J_ARR || list->n != custody->n)
        fail("data/custody.json: %zu entries, the statement signed %zu", custody->n,
             list && list->type == J_ARR ? list->n : 0);
    for (size_t i = 0; i < list->n; i++) {
        const jv *pair = &list->items[i];
        const jv *e = &custody->items[i];
        if (pair->type != J_ARR || pair->n != 2 || pair->items[0].type != J_NUM ||
            pair->items[1].type != J_STR || pair->items[0].num != get_num(e, "seq", name) ||
            strcmp(pair->items[1].str, get_str(e, "hash", name)) != 0)
            fail("custody entry %lld: not the entry the statement signed", get_num(e, "seq", name));
    }
    ok("statement: signed by the installation key; it binds the payload manifest, the tag "
       "files and this verifier's source, segments %lld..%lld of %lld%s, the chain values and "
       "%zu custody entries",
       sf->first, sf->last, sf->count, ntracks > 1 ? " and the capture's other tracks" : "",
       list->n);
    printf("      made %s by %s, range %s .. %s, reason: %s\n", get_str(doc, "made_at", name),
           get_str(doc, "made_by", name), get_str(get(doc, "range"), "start", name),
           get_str(get(doc, "range"), "end", name), get_str(doc, "reason", name));
}

static void check_checkpoint(EVP_PKEY *key, const jv *custody, const char *installation)
{
    const vfile *f = find_file("data/checkpoint.txt");
    if (!f) {
        printf("note  no audit checkpoint in the package (none was signed yet)\n");
        return;
    }
    char *line = strndup((const char *)f->data, f->len);
    char *nl = strchr(line, '\n');
    if (nl)
        *nl = '\0';
    char magic[32], inst[64], at[40], head_hex[80], sig64[120];
    long long seq;
    if (sscanf(line, "%31s %63s %39s %lld %79s %119s", magic, inst, at, &seq, head_hex, sig64) !=
            6 ||
        strcmp(magic, "custos-checkpoint-v1") != 0)
        fail("data/checkpoint.txt: not a custos-checkpoint-v1 line");
    char signed_part[400];
    int sl = snprintf(signed_part, sizeof(signed_part), "%s %s %s %lld %s", magic, inst, at, seq,
                      head_hex);
    unsigned char sig[64];
    if (sl < 0 || (size_t)sl >= sizeof(signed_part) || strncmp(line, signed_part, (size_t)sl) ||
        unbase64(sig64, strlen(sig64), sig, sizeof(sig)) != 64 ||
        !signature_ok(key, signed_part, (size_t)sl, sig, 64))
        fail("data/checkpoint.txt: its signature does not verify with data/installation-key.pem");
    if (strcmp(inst, installation) != 0)
        fail("data/checkpoint.txt: of another installation");
    for (size_t i = 0; i < custody->n; i++)
        if (get_num(&custody->items[i], "seq", "data/custody.json") == seq &&
            strcmp(get_str(&custody->items[i], "hash", "data/custody.json"), head_hex) != 0)
            fail("custody entry %lld: not the entry the checkpoint signed", seq);
    ok("checkpoint: the audit chain's head at entry %lld (%s), signed by the installation key", seq,
       at);
    free(line);
}

int main(int argc, char **argv)
{
    const char *pinned = NULL;
    if (argc == 4 && strcmp(argv[1], "--key-sha256") == 0) {
        pinned = argv[2];
        argv += 2;
        argc -= 2;
    }
    if (argc != 2 || argv[1][0] == '-' || (pinned && strlen(pinned) != 64)) {
        fprintf(stderr, "usage: custos-verify [--key-sha256 HEX] PACKAGE.zip|DIRECTORY\n"
                        "  --key-sha256: the SHA-256 of the installation's public key (raw 32\n"
                        "  bytes), as it publishes it; without it the package's own key is used\n");
        return 2;
    }
    struct stat st;
    if (stat(argv[1], &st) != 0)
        die("%s: %s", argv[1], strerror(errno));
    if (S_ISDIR(st.st_mode))
        load_dir(argv[1]);
    else
        load_zip(argv[1]);
    check_names();
    printf("custos-verify: %s (%zu files)\n", argv[1], nfiles);
    check_bag();
    /* The recording (data/), then the capture's other tracks (data/tracks/<id>/). */
    segment_facts sf[TRACKS_MAX];
    size_t ntracks = 0;
    memset(sf, 0, sizeof(sf));
    load_pcapng("data/");
    check_segments("data/", &sf[ntracks++]);
    for (size_t i = 0; i < nfiles; i++) {
        const char *n = files[i].name;
        if (strncmp(n, "data/tracks/", 12) != 0 || strlen(n) != 12 + 36 + 14 ||
            strcmp(n + 48, "/segments.json") != 0)
            continue;
        if (ntracks == TRACKS_MAX)
            fail("data/tracks/: more than %d tracks", TRACKS_MAX - 1);
        char dir[64];
        snprintf(dir, sizeof(dir), "data/tracks/%.36s/", n + 12);
        load_pcapng(dir);
        check_segments(dir, &sf[ntracks]);
        if (strncmp(sf[ntracks].recording, n + 12, 36) != 0)
            fail("%s: of recording %s, not of the track its directory names", n,
                 sf[ntracks].recording);
        ntracks++;
    }
    char installation[64];
    const jv *custody = check_custody(sf, ntracks, installation, sizeof(installation));
    EVP_PKEY *key = load_key();
    unsigned char raw[32], fp[32];
    size_t raw_len = sizeof(raw);
    char fp_hex[65] = "?";
    if (EVP_PKEY_get_raw_public_key(key, raw, &raw_len) == 1) {
        sha256(raw, raw_len, fp);
        hex(fp, 32, fp_hex);
    }
    if (pinned && strcasecmp(pinned, fp_hex) != 0)
        fail("data/installation-key.pem: not the key given (its SHA-256 is %s)", fp_hex);
    printf("      installation %s, key SHA-256 %s%s\n", installation, fp_hex,
           pinned ? " (the key given)" : " (compare with the one the installation publishes)");
    check_statement(key, sf, ntracks, custody, installation);
    check_checkpoint(key, custody, installation);
    const vfile *clip = find_file("data/derived/clip.mp4");
    if (clip)
        printf("note  data/derived/clip.mp4 is a derived copy for viewing (made as "
               "data/derived/provenance.json says); the packets are the evidence\n");
    EVP_PKEY_free(key);
    printf("verdict: VERIFIED (%d checks): recording %s, segments %lld..%lld, against %s key "
           "%.16s...\n",
           checks, sf[0].recording, sf[0].first, sf[0].last,
           pinned ? "the given" : "the package's own", fp_hex);
    return 0;
}
