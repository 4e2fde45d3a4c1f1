/*
 * Key-encryption keys in the keys directory, and wrapping with them
 * (AES-256-GCM). Plain keys live only in memory, are cached per KEK id and
 * wiped on close or when their KEK is destroyed.
 */
#include "keys_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEK_MAGIC    "custos-kek-v1\n"
#define KEK_FILE_MAX 256

static bool kek_id_valid(const char *id)
{
    return strlen(id) == KEYS_KEK_ID_LEN && strspn(id, "0123456789abcdef") == KEYS_KEK_ID_LEN;
}

cu_rc keys_random(void *buf, size_t len, cu_err *err)
{
    if (RAND_bytes(buf, (int)len) != 1)
        return cu_err_set(err, CU_ERR_IO, "the random number generator failed");
    return CU_OK;
}

cu_rc keys_read_file(const char *path, size_t max, cu_buf *out, cu_err *err)
{
    cu_rc rc = CU_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int e = errno;
        return cu_err_set(err, e == ENOENT ? CU_ERR_NOTFOUND : CU_ERR_IO, "cannot read %s: %s",
                          path, strerror(e));
    }
    cu_buf_reset(out);
    for (;;) {
        char chunk[512];
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            rc = cu_err_set(err, CU_ERR_IO, "cannot read %s: %s", path, strerror(e));
            break;
        }
        if (n == 0)
            break;
        bool fits = out->len + (size_t)n <= max && cu_buf_append(out, chunk, (size_t)n) == CU_OK;
        OPENSSL_cleanse(chunk, sizeof(chunk));
        if (!fits) {
            rc = cu_err_set(err, CU_ERR_INVALID, "%s is larger than %zu bytes", path, max);
            break;
        }
    }
    close(fd);
    return rc;
}

/* ---------------------------------------------------------- permissions */

/* One entry of the keys directory: ours, not a link, no group/other access. */
static cu_rc check_entry(const char *path, bool is_dir, cu_err *err)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "cannot stat %s: %s", path, strerror(e));
    }
    if (S_ISLNK(st.st_mode))
        return cu_err_set(err, CU_ERR_PERM, "%s is a symbolic link; key files must be plain files",
                          path);
    if (is_dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))
        return cu_err_set(err, CU_ERR_PERM, "%s is not a %s", path,
                          is_dir ? "directory" : "regular file");
    if (st.st_uid != geteuid())
        return cu_err_set(err, CU_ERR_PERM,
                          "%s belongs to uid %u, not to the account Custos runs "
                          "as (uid %u): fix its owner",
                          path, (unsigned)st.st_uid, (unsigned)geteuid());
    mode_t want = is_dir ? 0700 : 0600;
    if ((st.st_mode & 07777) != want) {
        if (chmod(path, want) != 0) {
            int e = errno;
            return cu_err_set(err, CU_ERR_PERM, "%s has mode %04o and cannot be made %04o: %s",
                              path, (unsigned)(st.st_mode & 07777), (unsigned)want, strerror(e));
        }
        CU_LOG(CU_LOG_WARN, "keys", "%s had mode %04o; corrected to %04o", path,
               (unsigned)(st.st_mode & 07777), (unsigned)want);
    }
    return CU_OK;
}

/* The directory and everything in it (one level; pending/ and its files too). */
static cu_rc check_tree(const char *dir, int depth, cu_err *err)
{
    cu_rc rc = check_entry(dir, true, err);
    if (rc)
        return rc;
    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "cannot list %s: %s", dir, strerror(e));
    }
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= (int)sizeof(path))
            continue;
        struct stat st;
        if (lstat(path, &st) != 0)
            continue; /* gone meanwhile */
        if (S_ISDIR(st.st_mode) && depth == 0)
            rc = check_tree(path, 1, err);
        else
            rc = check_entry(path, S_ISDIR(st.st_mode), err);
    }
    closedir(d);
    return rc;
}

/* ------------------------------------------------------------------ KEKs */

/* Read the active KEK id; CU_ERR_NOTFOUND when there is none yet. */
static cu_rc active_id(keys_ring *k, char id[KEYS_KEK_ID_LEN + 1], cu_err *err)
{
    char path[PATH_MAX + 16];
    cu_buf text;
    snprintf(path, sizeof(path), "%s/active", k->dir);
    cu_buf_init(&text, 64);
    cu_rc rc = keys_read_file(path, 64, &text, err);
    if (rc == CU_ERR_NOTFOUND)
        rc = cu_err_set(err, CU_ERR_NOTFOUND, "no key-encryption key in %s", k->dir);
    if (rc)
        goto out;
    text.data[strcspn(text.data, "\n")] = '\0';
    if (!kek_id_valid(text.data)) {
        rc = cu_err_set(err, CU_ERR_INVALID, "%s does not name a key", path);
        goto out;
    }
    memcpy(id, text.data, KEYS_KEK_ID_LEN + 1);
out:
    cu_buf_free(&text);
    return rc;
}

/* Load a KEK by id (cached). Called with k->lock held. */
static cu_rc kek_load(keys_ring *k, const char *id, uint8_t key[32], cu_err *err)
{
    for (int i = 0; i < k->nkeks; i++) {
        if (strcmp(k->keks[i].id, id) == 0) {
            memcpy(key, k->keks[i].key, 32);
            return CU_OK;
        }
    }
    if (!kek_id_valid(id))
        return cu_err_set(err, CU_ERR_INVALID, "bad key-encryption key id '%.20s'", id);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/kek-%s.key", k->dir, id);
    cu_buf text;
    cu_buf_init(&text, KEK_FILE_MAX);
    cu_rc rc = keys_read_file(path, KEK_FILE_MAX, &text, err);
    if (rc) {
        if (rc == CU_ERR_NOTFOUND)
            cu_err_set(err, CU_ERR_NOTFOUND, "key-encryption key %s is missing (%s)", id, path);
        goto out;
    }
    size_t mlen = strlen(KEK_MAGIC);
    if (text.len < mlen + 64 || memcmp(text.data, KEK_MAGIC, mlen) != 0 ||
        (text.data[mlen + 64] != '\n' && text.data[mlen + 64] != '\0')) {
        rc = cu_err_set(err, CU_ERR_INVALID, "%s is not a key-encryption key file", path);
        goto out;
    }
    text.data[mlen + 64] = '\0';
    if (!cu_hex_decode(text.data + mlen, key, 32)) {
        rc = cu_err_set(err, CU_ERR_INVALID, "%s: bad key text", path);
        goto out;
    }
    if (k->nkeks < KEYS_CACHED_KEKS) {
        cu_strlcpy(k->keks[k->nkeks].id, id, sizeof(k->keks[0].id));
        memcpy(k->keks[k->nkeks].key, key, 32);
        k->nkeks++;
    }
out:
    if (text.data)
        OPENSSL_cleanse(text.data, text.alloc);
    cu_buf_free(&text);
    return rc;
}

static cu_rc kek_add_locked(keys_ring *k, char new_id[KEYS_KEK_ID_LEN + 1], cu_err *err)
{
    uint8_t raw_id[KEYS_KEK_ID_LEN / 2], key[32];
    char text[128], hex[65];
    cu_rc rc = keys_random(raw_id, sizeof(raw_id), err);
    if (!rc)
        rc = keys_random(key, sizeof(key), err);
    if (rc)
        return rc;
    cu_hex_encode(raw_id, sizeof(raw_id), new_id);
    cu_hex_encode(key, sizeof(key), hex);
    int n = snprintf(text, sizeof(text), "%s%s\n", KEK_MAGIC, hex);
    char name[64];
    snprintf(name, sizeof(name), "kek-%s.key", new_id);
    rc = cu_file_write_durably(k->dir, name, text, (size_t)n, 0600, err);
    OPENSSL_cleanse(text, sizeof(text));
    OPENSSL_cleanse(hex, sizeof(hex));
    OPENSSL_cleanse(key, sizeof(key));
    if (rc)
        return rc;
    char active[KEYS_KEK_ID_LEN + 2];
    snprintf(active, sizeof(active), "%s\n", new_id);
    rc = cu_file_write_durably(k->dir, "active", active, strlen(active), 0600, err);
    if (!rc)
        CU_LOG(CU_LOG_INFO, "keys", "new key-encryption key %s is active", new_id);
    return rc;
}

cu_rc keys_open(const char *dir, bool create, keys_ring **out, cu_err *err)
{
    cu_rc rc = CU_OK;
    keys_ring *k = cu_xcalloc(1, sizeof(*k));
    pthread_mutex_init(&k->lock, NULL);
    if (!cu_strlcpy(k->dir, dir, sizeof(k->dir))) {
        rc = cu_err_set(err, CU_ERR_INVALID, "keys directory path too long");
        goto out;
    }
    if (create) {
        rc = cu_mkdir_durable(k->dir, 0700, err);
        if (rc)
            goto out;
    }
    if (!create && access(k->dir, F_OK) != 0) {
        rc = cu_err_set(err, CU_ERR_NOTFOUND, "no keys directory at %s", k->dir);
        goto out;
    }
    rc = check_tree(k->dir, 0, err);
    if (rc)
        goto out;
    if (create) {
        char id[KEYS_KEK_ID_LEN + 1];
        rc = active_id(k, id, err);
        if (rc == CU_ERR_NOTFOUND)
            rc = kek_add_locked(k, id, err);
        if (!rc)
            rc = keys_signing_ensure(k, err);
        if (rc)
            goto out;
    }
    *out = k;
    k = NULL;
out:
    keys_close(k);
    return rc;
}

void keys_close(keys_ring *k)
{
    if (!k)
        return;
    OPENSSL_cleanse(k->keks, sizeof(k->keks));
    EVP_PKEY_free(k->signing);
    pthread_mutex_destroy(&k->lock);
    free(k);
}

const char *keys_dir(const keys_ring *k)
{
    return k->dir;
}

cu_rc keys_active(keys_ring *k, char id[KEYS_KEK_ID_LEN + 1], cu_err *err)
{
    pthread_mutex_lock(&k->lock);
    cu_rc rc = active_id(k, id, err);
    pthread_mutex_unlock(&k->lock);
    return rc;
}

cu_rc keys_kek_add(keys_ring *k, char new_id[KEYS_KEK_ID_LEN + 1], cu_err *err)
{
    pthread_mutex_lock(&k->lock);
    cu_rc rc = kek_add_locked(k, new_id, err);
    pthread_mutex_unlock(&k->lock);
    return rc;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

cu_rc keys_kek_list(keys_ring *k, char (**ids)[KEYS_KEK_ID_LEN + 1], size_t *n, cu_err *err)
{
    size_t cap = 8, count = 0;
    *ids = NULL;
    *n = 0;
    DIR *d = opendir(k->dir);
    if (!d) {
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "cannot list %s: %s", k->dir, strerror(e));
    }
    char(*list)[KEYS_KEK_ID_LEN + 1] = cu_xmalloc(cap * sizeof(*list));
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *name = de->d_name;
        size_t len = strlen(name);
        if (len != 4 + KEYS_KEK_ID_LEN + 4 || strncmp(name, "kek-", 4) != 0 ||
            strcmp(name + len - 4, ".key") != 0)
            continue;
        char id[KEYS_KEK_ID_LEN + 1];
        memcpy(id, name + 4, KEYS_KEK_ID_LEN);
        id[KEYS_KEK_ID_LEN] = '\0';
        if (!kek_id_valid(id))
            continue;
        if (count == cap) {
            cap *= 2;
            void *bigger = realloc(list, cap * sizeof(*list));
            if (!bigger)
                abort();
            list = bigger;
        }
        memcpy(list[count++], id, sizeof(id));
    }
    closedir(d);
    if (count)
        qsort(list, count, sizeof(*list), cmp_id);
    *ids = list;
    *n = count;
    return CU_OK;
}

cu_rc keys_kek_destroy(keys_ring *k, const char *id, cu_err *err)
{
    cu_rc rc = CU_OK;
    char active[KEYS_KEK_ID_LEN + 1], path[PATH_MAX + 32];
    if (!kek_id_valid(id))
        return cu_err_set(err, CU_ERR_INVALID, "'%.40s' is not a key-encryption key id", id);
    pthread_mutex_lock(&k->lock);
    rc = active_id(k, active, err);
    if (rc)
        goto out;
    if (strcmp(active, id) == 0) {
        rc = cu_err_set(err, CU_ERR_BUSY,
                        "key-encryption key %s is the active one: rotate first (ingestctl keys "
                        "rotate)",
                        id);
        goto out;
    }
    snprintf(path, sizeof(path), "%s/kek-%s.key", k->dir, id);
    /* Overwrite before the unlink: a file system that keeps the old blocks
     * (no TRIM, a snapshot) then keeps zeros. */
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int e = errno;
        rc = cu_err_set(err, e == ENOENT ? CU_ERR_NOTFOUND : CU_ERR_IO, "cannot open %s: %s", path,
                        strerror(e));
        goto out;
    }
    struct stat st;
    uint8_t zeros[KEK_FILE_MAX] = {0};
    bool ok = fstat(fd, &st) == 0 && st.st_size <= KEK_FILE_MAX &&
              pwrite(fd, zeros, (size_t)st.st_size, 0) == st.st_size && fsync(fd) == 0;
    int e = errno;
    close(fd);
    if (!ok) {
        rc = cu_err_set(err, CU_ERR_IO, "cannot overwrite %s: %s", path, strerror(e));
        goto out;
    }
    if (unlink(path) != 0 || cu_fsync_dir(k->dir) != 0) {
        e = errno;
        rc = cu_err_set(err, CU_ERR_IO, "cannot remove %s: %s", path, strerror(e));
        goto out;
    }
    for (int i = 0; i < k->nkeks; i++) {
        if (strcmp(k->keks[i].id, id) == 0) {
            k->keks[i] = k->keks[k->nkeks - 1];
            OPENSSL_cleanse(&k->keks[k->nkeks - 1], sizeof(k->keks[0]));
            k->nkeks--;
            break;
        }
    }
    CU_LOG(CU_LOG_INFO, "keys", "key-encryption key %s destroyed", id);
out:
    pthread_mutex_unlock(&k->lock);
    return rc;
}

/* ------------------------------------------------------------- wrapping */

static cu_rc gcm(bool encrypt, const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad,
                 size_t aad_len, const uint8_t *in, size_t len, uint8_t *out, uint8_t tag[16])
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, ok = c != NULL;
    ok = ok && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce, encrypt ? 1 : 0) == 1;
    ok = ok && EVP_CipherUpdate(c, NULL, &n, aad, (int)aad_len) == 1;
    ok = ok && EVP_CipherUpdate(c, out, &n, in, (int)len) == 1;
    if (!encrypt)
        ok = ok && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, tag) == 1;
    ok = ok && EVP_CipherFinal_ex(c, out + n, &n) == 1;
    if (encrypt)
        ok = ok && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1;
    EVP_CIPHER_CTX_free(c);
    return ok ? CU_OK : CU_ERR_INVALID;
}

cu_rc keys_wrap(keys_ring *k, const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len,
                char kek_id[KEYS_KEK_ID_LEN + 1], uint8_t *out, cu_err *err)
{
    uint8_t kek[32], full_aad[KEYS_AAD_MAX];
    if (aad_len > KEYS_AAD_MAX - KEYS_KEK_ID_LEN)
        return cu_err_set(err, CU_ERR_INVALID, "wrapping: additional data too long");
    pthread_mutex_lock(&k->lock);
    cu_rc rc = active_id(k, kek_id, err);
    if (!rc)
        rc = kek_load(k, kek_id, kek, err);
    pthread_mutex_unlock(&k->lock);
    if (rc)
        return rc;
    memcpy(full_aad, aad, aad_len);
    memcpy(full_aad + aad_len, kek_id, KEYS_KEK_ID_LEN);
    out[0] = 1;
    rc = keys_random(out + 1, 12, err);
    if (!rc && gcm(true, kek, out + 1, full_aad, aad_len + KEYS_KEK_ID_LEN, in, len, out + 13,
                   out + 13 + len) != CU_OK)
        rc = cu_err_set(err, CU_ERR_IO, "wrapping a key failed");
    OPENSSL_cleanse(kek, sizeof(kek));
    return rc;
}

cu_rc keys_unwrap(keys_ring *k, const char *kek_id, const uint8_t *aad, size_t aad_len,
                  const uint8_t *wrapped, size_t wrapped_len, uint8_t *out, cu_err *err)
{
    uint8_t kek[32], full_aad[KEYS_AAD_MAX], tag[16];
    if (wrapped_len <= KEYS_WRAP_EXTRA || wrapped[0] != 1)
        return cu_err_set(err, CU_ERR_INVALID, "a wrapped key has a bad length or version");
    if (aad_len > KEYS_AAD_MAX - KEYS_KEK_ID_LEN)
        return cu_err_set(err, CU_ERR_INVALID, "unwrapping: additional data too long");
    pthread_mutex_lock(&k->lock);
    cu_rc rc = kek_load(k, kek_id, kek, err);
    pthread_mutex_unlock(&k->lock);
    if (rc)
        return rc;
    size_t n = wrapped_len - KEYS_WRAP_EXTRA;
    memcpy(full_aad, aad, aad_len);
    memcpy(full_aad + aad_len, kek_id, KEYS_KEK_ID_LEN);
    memcpy(tag, wrapped + 13 + n, 16);
    if (gcm(false, kek, wrapped + 1, full_aad, aad_len + KEYS_KEK_ID_LEN, wrapped + 13, n, out,
            tag) != CU_OK) {
        OPENSSL_cleanse(out, n);
        rc = cu_err_set(err, CU_ERR_INVALID,
                        "a wrapped key does not authenticate under key-encryption key %s", kek_id);
    }
    OPENSSL_cleanse(kek, sizeof(kek));
    return rc;
}

/* aad = label ‖ 0 ‖ context ‖ 0 (the KEK id follows) */
static size_t secret_aad(const char *label, const char *context, uint8_t *aad, size_t cap)
{
    size_t l = strlen(label), c = strlen(context);
    if (l + c + 2 > cap)
        return 0;
    memcpy(aad, label, l);
    aad[l] = 0;
    memcpy(aad + l + 1, context, c);
    aad[l + 1 + c] = 0;
    return l + c + 2;
}

cu_rc keys_wrap_secret(keys_ring *k, const char *label, const char *context, const uint8_t *secret,
                       size_t len, char kek_id[KEYS_KEK_ID_LEN + 1],
                       uint8_t out[KEYS_SECRET_WRAPPED_MAX], size_t *out_len, cu_err *err)
{
    uint8_t aad[KEYS_AAD_MAX - KEYS_KEK_ID_LEN];
    if (len == 0 || len > KEYS_SECRET_MAX)
        return cu_err_set(err, CU_ERR_INVALID, "a secret of %zu bytes cannot be wrapped", len);
    size_t aad_len = secret_aad(label, context, aad, sizeof(aad));
    if (!aad_len)
        return cu_err_set(err, CU_ERR_INVALID, "wrapping label or context too long");
    cu_rc rc = keys_wrap(k, aad, aad_len, secret, len, kek_id, out, err);
    if (!rc)
        *out_len = len + KEYS_WRAP_EXTRA;
    return rc;
}

cu_rc keys_unwrap_secret(keys_ring *k, const char *label, const char *context, const char *kek_id,
                         const uint8_t *wrapped, size_t wrapped_len, uint8_t out[KEYS_SECRET_MAX],
                         size_t *len, cu_err *err)
{
    uint8_t aad[KEYS_AAD_MAX - KEYS_KEK_ID_LEN];
    if (wrapped_len <= KEYS_WRAP_EXTRA || wrapped_len > KEYS_SECRET_WRAPPED_MAX)
        return cu_err_set(err, CU_ERR_INVALID, "a wrapped secret has a bad length");
    size_t aad_len = secret_aad(label, context, aad, sizeof(aad));
    if (!aad_len)
        return cu_err_set(err, CU_ERR_INVALID, "wrapping label or context too long");
    cu_rc rc = keys_unwrap(k, kek_id, aad, aad_len, wrapped, wrapped_len, out, err);
    if (rc == CU_ERR_INVALID)
        cu_err_set(err, rc, "a wrapped secret (%s) does not authenticate", label);
    if (!rc)
        *len = wrapped_len - KEYS_WRAP_EXTRA;
    return rc;
}
