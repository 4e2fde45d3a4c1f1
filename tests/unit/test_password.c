/* Password policy and argon2id hashes (control/password.c). */
#include "control/control.h"
#include "tests/testlib.h"

#include <string.h>

int main(void)
{
    cu_err err;
    CHECK(ctl_password_check("ada", "correct horse battery staple", &err) == CU_OK);
    CHECK(ctl_password_check("ada", "short", &err) == CU_ERR_INVALID);
    CHECK(strstr(err.msg, "at least 12") != NULL);
    CHECK(ctl_password_check("ada", "Password1234", &err) == CU_ERR_INVALID); /* banned, any case */
    CHECK(strstr(err.msg, "banned") != NULL);
    CHECK(ctl_password_check("ada.lovelace1", "ADA.LOVELACE1", &err) == CU_ERR_INVALID);
    CHECK(ctl_password_check("ada", "zzzzzzzzzzzzzzzz", &err) == CU_ERR_INVALID);
    CHECK(ctl_password_check("ada", "tab\there is bad!", &err) == CU_ERR_INVALID);
    char longpw[CTL_PASSWORD_MAX + 2];
    memset(longpw, 'x', sizeof(longpw) - 1);
    longpw[sizeof(longpw) - 1] = '\0';
    longpw[0] = 'y';
    CHECK(ctl_password_check("ada", longpw, &err) == CU_ERR_INVALID);
    longpw[CTL_PASSWORD_MAX] = '\0';
    CHECK(ctl_password_check("ada", longpw, &err) == CU_OK);

    char a[CTL_PASSWORD_HASH_MAX], b[CTL_PASSWORD_HASH_MAX];
    CHECK(ctl_password_hash("correct horse battery staple", a, &err) == CU_OK);
    CHECK(ctl_password_hash("correct horse battery staple", b, &err) == CU_OK);
    CHECK(strncmp(a, "$argon2id$v=19$m=65536,t=3,p=1$", 31) == 0);
    CHECK(strcmp(a, b) != 0); /* fresh salt each time */
    CHECK(ctl_password_verify(a, "correct horse battery staple"));
    CHECK(ctl_password_verify(b, "correct horse battery staple"));
    CHECK(!ctl_password_verify(a, "correct horse battery stapl"));
    CHECK(!ctl_password_verify(a, ""));
    CHECK(!ctl_password_verify(NULL, "x"));
    CHECK(!ctl_password_verify("$argon2i$v=19$m=65536,t=3,p=1$c2FsdHNhbHQ$aGFzaA", "x"));
    CHECK(!ctl_password_verify("garbage", "x"));
    return test_finish("test_password");
}
