/*
 * Passwords (docs/control.md): the policy every new password must meet, and
 * argon2id hashes in their encoded form.
 */
#include "control.h"

#include <argon2.h>
#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <string.h>

#define T_COST   3
#define M_COST   65536 /* KiB: 64 MiB */
#define LANES    1
#define SALT_LEN 16
#define TAG_LEN  32

/* Leaked-password lists' most common entries of 12 characters or more, and
 * keyboard runs: refused whatever their case. */
static const char *const banned[] = {
    "123456789012",  "1234567890123",  "12345678901234", "123456789123",     "1234567891011",
    "password1234",  "password12345",  "password123456", "passwordpassword", "qwertyuiopas",
    "qwertyuiop123", "qwertyuiopasdf", "1q2w3e4r5t6y",   "1qaz2wsx3edc",     "q1w2e3r4t5y6",
    "zaq12wsxcde3",  "asdfghjkl123",   "asdfghjklqwe",   "zxcvbnm12345",     "iloveyou1234",
    "welcome12345",  "welcome123456",  "administrator",  "administrator1",   "letmein12345",
    "changeme1234",  "changeme12345",  "abcdefghijkl",   "abcdefg12345",     "abc123456789",
    "football1234",  "baseball1234",   "superman1234",   "trustno12345",     "monkey123456",
    "dragon123456",  "sunshine1234",   "princess1234",   "master123456",     "qazwsxedcrfv",
    "1qazxsw23edc",  "p@ssw0rd1234",   "p@ssword1234",   "passw0rd1234",     "aa123456789a",
    "987654321098",  "098765432109",   "111111111111",   "000000000000",     "police123456",
    "officer12345",  "custos123456",   "bodycam12345",   "evidence1234",
};

static bool all_same(const char *pw)
{
    for (const char *p = pw + 1; *p; p++)
        if (*p != pw[0])
            return false;
    return true;
}

cu_rc ctl_password_check(const char *username, const char *password, cu_err *err)
{
    size_t n = strlen(password);
    if (n < CTL_PASSWORD_MIN)
        return cu_err_set(err, CU_ERR_INVALID, "password: at least %d characters (this has %zu)",
                          CTL_PASSWORD_MIN, n);
    if (n > CTL_PASSWORD_MAX)
        return cu_err_set(err, CU_ERR_INVALID, "password: at most %d bytes", CTL_PASSWORD_MAX);
    for (const char *p = password; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return cu_err_set(err, CU_ERR_INVALID, "password: control characters are not allowed");
    if (username && strcasecmp(username, password) == 0)
        return cu_err_set(err, CU_ERR_INVALID, "password: must not be the username");
    if (all_same(password))
        return cu_err_set(err, CU_ERR_INVALID, "password: one character repeated");
    for (size_t i = 0; i < sizeof(banned) / sizeof(banned[0]); i++)
        if (strcasecmp(banned[i], password) == 0)
            return cu_err_set(err, CU_ERR_INVALID, "password: too common (on the banned list)");
    return CU_OK;
}

cu_rc ctl_password_hash(const char *password, char out[CTL_PASSWORD_HASH_MAX], cu_err *err)
{
    uint8_t salt[SALT_LEN];
    if (RAND_bytes(salt, sizeof(salt)) != 1)
        return cu_err_set(err, CU_ERR_IO, "password: no random bytes for a salt");
    int rc = argon2id_hash_encoded(T_COST, M_COST, LANES, password, strlen(password), salt,
                                   sizeof(salt), TAG_LEN, out, CTL_PASSWORD_HASH_MAX);
    if (rc != ARGON2_OK)
        return cu_err_set(err, CU_ERR_IO, "password: argon2id: %s", argon2_error_message(rc));
    return CU_OK;
}

bool ctl_password_verify(const char *encoded, const char *password)
{
    if (!encoded || strncmp(encoded, "$argon2id$", 10) != 0)
        return false;
    return argon2id_verify(encoded, password, strlen(password)) == ARGON2_OK;
}
