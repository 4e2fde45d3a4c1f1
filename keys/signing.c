/*
 * The installation signing key: Ed25519, in <keys dir>/signing.key as PEM
 * PKCS#8 (what `openssl pkey` reads), made once at first start. It signs
 * audit checkpoints; its public half is what a third party checks them with.
 */
#include "keys_internal.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <string.h>
#include <unistd.h>

#define SIGNING_FILE_MAX 4096

static void signing_path(const keys_ring *k, char *path, size_t len)
{
    snprintf(path, len, "%s/" KEYS_SIGNING_FILE, k->dir);
}

/* Load the key into k->signing (k->lock held). */
static cu_rc signing_load(keys_ring *k, cu_err *err)
{
    char path[PATH_MAX + 32];
    cu_buf pem;
    BIO *bio = NULL;
    cu_rc rc;
    if (k->signing)
        return CU_OK;
    signing_path(k, path, sizeof(path));
    cu_buf_init(&pem, SIGNING_FILE_MAX);
    rc = keys_read_file(path, SIGNING_FILE_MAX, &pem, err);
    if (rc == CU_ERR_NOTFOUND)
        cu_err_set(err, rc,
                   "the installation signing key is missing (%s); ingestd makes it at "
                   "its first start",
                   path);
    if (rc)
        goto out;
    bio = BIO_new_mem_buf(pem.data, (int)pem.len);
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    if (!key || EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) {
        EVP_PKEY_free(key);
        rc = cu_err_set(err, CU_ERR_INVALID, "%s is not an Ed25519 private key", path);
        goto out;
    }
    k->signing = key;
out:
    BIO_free(bio);
    if (pem.data)
        OPENSSL_cleanse(pem.data, pem.alloc);
    cu_buf_free(&pem);
    return rc;
}

cu_rc keys_signing_ensure(keys_ring *k, cu_err *err)
{
    char path[PATH_MAX + 32];
    cu_rc rc = CU_OK;
    EVP_PKEY *key = NULL;
    BIO *bio = NULL;
    signing_path(k, path, sizeof(path));
    pthread_mutex_lock(&k->lock);
    if (access(path, F_OK) == 0) {
        rc = signing_load(k, err);
        goto out;
    }
    key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    bio = BIO_new(BIO_s_secmem());
    if (!key || !bio || PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1) {
        rc = cu_err_set(err, CU_ERR_IO, "cannot make the installation signing key");
        goto out;
    }
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    rc = cu_file_write_durably(k->dir, KEYS_SIGNING_FILE, data, (size_t)len, 0600, err);
    if (rc)
        goto out;
    k->signing = key;
    key = NULL;
    CU_LOG(CU_LOG_INFO, "keys", "installation signing key made (%s)", path);
out:
    pthread_mutex_unlock(&k->lock);
    EVP_PKEY_free(key);
    BIO_free(bio);
    return rc;
}

cu_rc keys_sign(keys_ring *k, const void *msg, size_t len, uint8_t sig[KEYS_SIG_LEN], cu_err *err)
{
    pthread_mutex_lock(&k->lock);
    cu_rc rc = signing_load(k, err);
    if (!rc) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        size_t sig_len = KEYS_SIG_LEN;
        if (!md || EVP_DigestSignInit(md, NULL, NULL, NULL, k->signing) != 1 ||
            EVP_DigestSign(md, sig, &sig_len, msg, len) != 1 || sig_len != KEYS_SIG_LEN)
            rc = cu_err_set(err, CU_ERR_IO, "signing failed");
        EVP_MD_CTX_free(md);
    }
    pthread_mutex_unlock(&k->lock);
    return rc;
}

cu_rc keys_public(keys_ring *k, uint8_t pub[KEYS_PUBLIC_LEN], cu_err *err)
{
    pthread_mutex_lock(&k->lock);
    cu_rc rc = signing_load(k, err);
    size_t len = KEYS_PUBLIC_LEN;
    if (!rc && (EVP_PKEY_get_raw_public_key(k->signing, pub, &len) != 1 || len != KEYS_PUBLIC_LEN))
        rc = cu_err_set(err, CU_ERR_IO, "cannot read the signing key's public half");
    pthread_mutex_unlock(&k->lock);
    return rc;
}

cu_rc keys_public_pem(keys_ring *k, cu_buf *out, cu_err *err)
{
    pthread_mutex_lock(&k->lock);
    cu_rc rc = signing_load(k, err);
    BIO *bio = rc ? NULL : BIO_new(BIO_s_mem());
    if (!rc && (!bio || PEM_write_bio_PUBKEY(bio, k->signing) != 1))
        rc = cu_err_set(err, CU_ERR_IO, "cannot write the public key");
    pthread_mutex_unlock(&k->lock);
    if (!rc) {
        char *data = NULL;
        long len = BIO_get_mem_data(bio, &data);
        cu_buf_reset(out);
        if (cu_buf_append(out, data, (size_t)len) != CU_OK)
            rc = cu_err_set(err, CU_ERR_NOMEM, "public key larger than the buffer");
    }
    BIO_free(bio);
    return rc;
}

bool keys_signature_ok(const uint8_t pub[KEYS_PUBLIC_LEN], const void *msg, size_t len,
                       const uint8_t sig[KEYS_SIG_LEN])
{
    EVP_PKEY *key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, KEYS_PUBLIC_LEN);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = key && md && EVP_DigestVerifyInit(md, NULL, NULL, NULL, key) == 1 &&
              EVP_DigestVerify(md, sig, KEYS_SIG_LEN, msg, len) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    return ok;
}
