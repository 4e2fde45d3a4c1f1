/*
 * TOTP second factor (RFC 6238 via liboath): 30-second steps, 6 digits, one
 * step of clock drift either way, each step usable once. The 20-byte secret
 * is stored only wrapped by the KEK (label custos-totp-v1, bound to the
 * username) and re-wrapped by `ingestctl keys rotate`.
 */
#include "control.h"

#include <liboath/oath.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SECRET_BYTES 20
#define STEP_S       30
#define WINDOW       1

static pthread_once_t oath_once = PTHREAD_ONCE_INIT;

static void init_oath(void)
{
    oath_init();
}

cu_rc ctl_totp_enroll(PGconn *conn, keys_ring *keys, const char *username,
                      char uri[CTL_TOTP_URI_MAX], cu_err *err)
{
    uint8_t secret[SECRET_BYTES], wrapped[KEYS_SECRET_WRAPPED_MAX];
    char kek[KEYS_KEK_ID_LEN + 1], *b32 = NULL;
    size_t wlen = 0, b32len = 0;
    cu_rc rc;
    pthread_once(&oath_once, init_oath);
    if (RAND_bytes(secret, sizeof(secret)) != 1)
        return cu_err_set(err, CU_ERR_IO, "TOTP: no random bytes for a secret");
    rc = keys_wrap_secret(keys, KEYS_LABEL_USER_TOTP, username, secret, sizeof(secret), kek,
                          wrapped, &wlen, err);
    if (rc)
        goto out;
    if (oath_base32_encode((const char *)secret, sizeof(secret), &b32, &b32len) != OATH_OK) {
        rc = cu_err_set(err, CU_ERR_NOMEM, "TOTP: cannot encode the secret");
        goto out;
    }
    const char *params[3] = {username, kek, (const char *)wrapped};
    int lengths[3] = {0, 0, (int)wlen}, formats[3] = {0, 0, 1};
    PGresult *res = PQexecParams(conn,
                                 "UPDATE users SET totp_kek_id = $2, totp_wrapped = $3, "
                                 "totp_last_step = 0 WHERE username = $1",
                                 3, NULL, params, lengths, formats, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = cu_err_set(err, CU_ERR_DB, "TOTP: %s", PQerrorMessage(conn));
    else if (strcmp(PQcmdTuples(res), "1") != 0)
        rc = cu_err_set(err, CU_ERR_NOTFOUND, "no user '%s'", username);
    PQclear(res);
    if (!rc)
        snprintf(uri, CTL_TOTP_URI_MAX,
                 "otpauth://totp/Custos:%s?secret=%s&issuer=Custos&algorithm=SHA1&digits=6&"
                 "period=30",
                 username, b32);
out:
    if (b32) {
        OPENSSL_cleanse(b32, b32len);
        free(b32);
    }
    OPENSSL_cleanse(secret, sizeof(secret));
    return rc;
}

ctl_totp_result ctl_totp_check(PGconn *conn, keys_ring *keys, const char *username,
                               const char *code, cu_err *err)
{
    pthread_once(&oath_once, init_oath);
    const char *params[1] = {username};
    PGresult *res = PQexecParams(conn,
                                 "SELECT totp_kek_id, totp_wrapped, totp_last_step FROM users "
                                 "WHERE username = $1 AND totp_wrapped IS NOT NULL",
                                 1, NULL, params, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        cu_err_set(err, CU_ERR_DB, "TOTP: %s", PQerrorMessage(conn));
        PQclear(res);
        return CTL_TOTP_ERROR;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        return CTL_TOTP_NOT_ENROLLED;
    }
    char kek[KEYS_KEK_ID_LEN + 1];
    snprintf(kek, sizeof(kek), "%.*s", PQgetlength(res, 0, 0), PQgetvalue(res, 0, 0));
    int64_t last = 0;
    if (PQgetlength(res, 0, 2) == 8) {
        const uint8_t *b = (const uint8_t *)PQgetvalue(res, 0, 2);
        for (int i = 0; i < 8; i++)
            last = (int64_t)((uint64_t)last << 8 | b[i]);
    }
    uint8_t secret[KEYS_SECRET_MAX];
    size_t len = 0;
    cu_rc rc = keys_unwrap_secret(keys, KEYS_LABEL_USER_TOTP, username, kek,
                                  (const uint8_t *)PQgetvalue(res, 0, 1),
                                  (size_t)PQgetlength(res, 0, 1), secret, &len, err);
    PQclear(res);
    if (rc)
        return CTL_TOTP_ERROR;
    bool digits = strlen(code) == 6 && strspn(code, "0123456789") == 6;
    time_t now = time(NULL);
    int pos = 0;
    int v = digits
                ? oath_totp_validate2((const char *)secret, len, now, STEP_S, 0, WINDOW, &pos, code)
                : OATH_INVALID_OTP;
    OPENSSL_cleanse(secret, sizeof(secret));
    if (v < 0)
        return CTL_TOTP_WRONG;
    int64_t step = (int64_t)now / STEP_S + pos;
    if (step <= last)
        return CTL_TOTP_REPLAYED;
    /* Claim the step atomically: of two logins racing with one code, one wins. */
    char step_text[24];
    snprintf(step_text, sizeof(step_text), "%lld", (long long)step);
    const char *p2[2] = {username, step_text};
    res = PQexecParams(conn,
                       "UPDATE users SET totp_last_step = $2 WHERE username = $1 AND "
                       "totp_last_step < $2::bigint",
                       2, NULL, p2, NULL, NULL, 0);
    ctl_totp_result out = CTL_TOTP_OK;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        cu_err_set(err, CU_ERR_DB, "TOTP: %s", PQerrorMessage(conn));
        out = CTL_TOTP_ERROR;
    } else if (strcmp(PQcmdTuples(res), "1") != 0) {
        out = CTL_TOTP_REPLAYED;
    }
    PQclear(res);
    return out;
}
