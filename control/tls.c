/*
 * TLS server contexts (RTSPS, the HTTPS API): the operator's certificate and
 * key, or a self-signed P-256 certificate made once in <data dir>/tls/ (key
 * 0600), naming the host, localhost and 127.0.0.1, and logged with its SHA-256
 * fingerprint so that clients can pin it. TLS 1.3 preferred; TLS 1.2 only
 * with ECDHE and an AEAD cipher.
 */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TLS12_AEAD_SUITES                                                                          \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

static const char *ssl_reason(void)
{
    static __thread char buf[160];
    unsigned long e = ERR_get_error();
    if (!e)
        return "unknown TLS error";
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return buf;
}

/* Write @p pem_write's output to @p path atomically with @p mode. */
static bool write_pem(const char *path, mode_t mode, int (*pem_write)(FILE *, void *), void *obj)
{
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return false;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        return false;
    }
    bool ok = pem_write(f, obj) == 1 && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    return ok && rename(tmp, path) == 0;
}

static int write_key(FILE *f, void *k)
{
    return PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
}

static int write_cert(FILE *f, void *x)
{
    return PEM_write_X509(f, x);
}

/* A self-signed certificate for @p host, valid ten years. */
static cu_rc make_self_signed(const char *what, const char *cert_path, const char *key_path,
                              const char *host, cu_err *err)
{
    cu_rc rc = CU_OK;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_EXTENSION *ext = NULL;
    char san[300];
    if (!key || !x) {
        rc = cu_err_set(err, CU_ERR_NOMEM, "%s: cannot make a key: %s", what, ssl_reason());
        goto out;
    }
    uint8_t serial[16];
    if (RAND_bytes(serial, sizeof(serial)) != 1) {
        rc = cu_err_set(err, CU_ERR_IO, "%s: the random number generator failed", what);
        goto out;
    }
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
    X509_set_version(x, 2);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"Custos", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)host, -1, -1, 0);
    X509_set_issuer_name(x, name);
    snprintf(san, sizeof(san), "DNS:%s, DNS:localhost, IP:127.0.0.1, IP:::1", host);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    if (!ext || !X509_add_ext(x, ext, -1) || !X509_sign(x, key, EVP_sha256())) {
        rc = cu_err_set(err, CU_ERR_IO, "%s: cannot sign a certificate: %s", what, ssl_reason());
        goto out;
    }
    if (!write_pem(key_path, 0600, write_key, key) || !write_pem(cert_path, 0644, write_cert, x))
        rc =
            cu_err_set(err, CU_ERR_IO, "%s: cannot write %s: %s", what, cert_path, strerror(errno));
out:
    X509_EXTENSION_free(ext);
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

static void log_fingerprint(const char *what, SSL_CTX *ctx, const char *path)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    uint8_t md[32];
    unsigned int n = 0;
    char hex[3 * 32 + 1] = "";
    if (!x || !X509_digest(x, EVP_sha256(), md, &n))
        return;
    for (unsigned int i = 0; i < n; i++)
        snprintf(hex + 3 * i, 4, "%02X%s", md[i], i + 1 < n ? ":" : "");
    CU_LOG(CU_LOG_INFO, "tls", "%s certificate %s, SHA-256 fingerprint %s", what, path, hex);
}

cu_rc ctl_tls_server_context(const ctl_tls_spec *t, SSL_CTX **out, cu_err *err)
{
    char dir[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
    const char *cert_path = t->cert_file, *key_path = t->key_file, *what = t->what;
    cu_rc rc = CU_OK;
    *out = NULL;
    if (!cert_path[0] != !key_path[0])
        return cu_err_set(err, CU_ERR_INVALID, "%s and %s go together: set both or neither",
                          t->cert_setting, t->key_setting);
    if (!cert_path[0]) {
        char host[256] = "";
        if (t->host && t->host[0])
            cu_strlcpy(host, t->host, sizeof(host));
        else if (gethostname(host, sizeof(host)) != 0 || !host[0])
            cu_strlcpy(host, "localhost", sizeof(host));
        host[sizeof(host) - 1] = '\0';
        snprintf(dir, sizeof(dir), "%s/tls", t->data_dir);
        snprintf(cert, sizeof(cert), "%s/%s-cert.pem", dir, t->stem);
        snprintf(key, sizeof(key), "%s/%s-key.pem", dir, t->stem);
        if (mkdir(dir, 0700) != 0 && errno != EEXIST)
            return cu_err_set(err, CU_ERR_IO, "%s: cannot create %s: %s", what, dir,
                              strerror(errno));
        if (access(cert, R_OK) != 0 || access(key, R_OK) != 0) {
            rc = make_self_signed(what, cert, key, host, err);
            if (rc)
                return rc;
            CU_LOG(CU_LOG_INFO, "tls", "%s: made a self-signed certificate for %s", what, host);
        }
        cert_path = cert;
        key_path = key;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return cu_err_set(err, CU_ERR_NOMEM, "%s: %s", what, ssl_reason());
    /* TLS 1.3 when the client has it (OpenSSL takes the highest both speak);
     * TLS 1.2 only with forward-secret AEAD suites. */
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_set_cipher_list(ctx, TLS12_AEAD_SUITES) != 1 ||
        SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) != 1) {
        rc = cu_err_set(err, CU_ERR_INVALID, "%s: cipher suites: %s", what, ssl_reason());
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
        rc =
            cu_err_set(err, CU_ERR_INVALID, "%s certificate %s: %s", what, cert_path, ssl_reason());
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        rc = cu_err_set(err, CU_ERR_INVALID, "%s key %s: %s", what, key_path, ssl_reason());
        goto fail;
    }
    log_fingerprint(what, ctx, cert_path);
    *out = ctx;
    return CU_OK;
fail:
    SSL_CTX_free(ctx);
    return rc;
}
