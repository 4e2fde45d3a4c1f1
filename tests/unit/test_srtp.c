/*
 * SRTP with the OpenSSL primitives: the known-answer tests libsrtp runs when
 * they are installed, protect/unprotect both ways against libsrtp's own
 * (NSS) primitives in a separate process, replay and authentication failures.
 */
#include "ingestd/ingestd.h"
#include "tests/testlib.h"

#include <srtp2/srtp.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static const uint8_t master[46] = {
    0xe1, 0xf9, 0x7a, 0x0d, 0x3e, 0x01, 0x8b, 0xe0, 0xd6, 0x4f, 0xa3, 0x2c, 0x06, 0xde, 0x41, 0x39,
    0x0e, 0xc6, 0x75, 0xad, 0x49, 0x8a, 0xfe, 0xeb, 0xb6, 0x96, 0x0b, 0x3a, 0xab, 0xe6, 0x11, 0x22,
    0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00};

static srtp_t session(bool gcm, bool inbound)
{
    srtp_policy_t p;
    memset(&p, 0, sizeof(p));
    if (gcm) {
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p.rtp);
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p.rtcp);
    } else {
        srtp_crypto_policy_set_rtp_default(&p.rtp);
        srtp_crypto_policy_set_rtcp_default(&p.rtcp);
    }
    p.ssrc.type = inbound ? ssrc_any_inbound : ssrc_any_outbound;
    p.key = (unsigned char *)master;
    p.window_size = 128;
    srtp_t s = NULL;
    REQUIRE(srtp_create(&s, &p) == srtp_err_status_ok);
    return s;
}

static size_t make_packet(uint8_t *buf, uint16_t seq)
{
    buf[0] = 0x80;
    buf[1] = 96;
    buf[2] = (uint8_t)(seq >> 8);
    buf[3] = (uint8_t)seq;
    memset(buf + 4, 0x11, 4);
    memcpy(buf + 8, "\x00\x00\x30\x39", 4); /* SSRC 12345 */
    for (int i = 12; i < 1200; i++)
        buf[i] = (uint8_t)(i * 7 + seq);
    return 1200;
}

/* Child mode: protect packets 0..9 and write them to stdout. */
static int protect_mode(bool gcm)
{
    cu_err err;
    if (ingest_srtp_init(&err) != CU_OK)
        return 2;
    srtp_t s = session(gcm, false);
    for (uint16_t seq = 0; seq < 10; seq++) {
        uint8_t buf[1300];
        int len = (int)make_packet(buf, seq);
        if (srtp_protect(s, buf, &len) != srtp_err_status_ok)
            return 3;
        uint16_t n = (uint16_t)len;
        if (fwrite(&n, 2, 1, stdout) != 1 || fwrite(buf, 1, (size_t)len, stdout) != (size_t)len)
            return 4;
    }
    srtp_dealloc(s);
    return 0;
}

/* Run this program as a protector (NSS or OpenSSL) and unprotect here. */
static void interop(const char *self, bool child_nss, bool gcm)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s%s --protect %s", child_nss ? "CUSTOS_SRTP_NSS=1 " : "", self,
             gcm ? "gcm" : "cm");
    FILE *f = popen(cmd, "r");
    REQUIRE(f);
    srtp_t s = session(gcm, true);
    int ok = 0;
    for (uint16_t seq = 0; seq < 10; seq++) {
        uint16_t n;
        uint8_t buf[1300], expect[1300];
        if (fread(&n, 2, 1, f) != 1 || n > sizeof(buf) || fread(buf, 1, n, f) != n)
            break;
        int len = n;
        if (srtp_unprotect(s, buf, &len) == srtp_err_status_ok && len == 1200 &&
            make_packet(expect, seq) && memcmp(buf, expect, 1200) == 0)
            ok++;
    }
    CHECK_EQ_INT(pclose(f), 0);
    CHECK_EQ_INT(ok, 10);
    printf("interop %s: protected by %s, unprotected by OpenSSL: %d/10\n", gcm ? "GCM" : "CM",
           child_nss ? "NSS" : "OpenSSL", ok);
    srtp_dealloc(s);
}

static void test_rejections(bool gcm)
{
    srtp_t out = session(gcm, false), in = session(gcm, true);
    uint8_t buf[1300], copy[1300];
    int len = (int)make_packet(buf, 5);
    REQUIRE(srtp_protect(out, buf, &len) == srtp_err_status_ok);
    memcpy(copy, buf, (size_t)len);
    int n = len;
    CHECK_EQ_INT(srtp_unprotect(in, buf, &n), srtp_err_status_ok);
    n = len;
    memcpy(buf, copy, (size_t)len);
    CHECK_EQ_INT(srtp_unprotect(in, buf, &n), srtp_err_status_replay_fail);
    len = (int)make_packet(buf, 6);
    REQUIRE(srtp_protect(out, buf, &len) == srtp_err_status_ok);
    buf[100] ^= 1;
    n = len;
    CHECK_EQ_INT(srtp_unprotect(in, buf, &n), srtp_err_status_auth_fail);
    /* RTCP both ways. */
    uint8_t rtcp[64] = {0x80, 200, 0, 6, 0, 0, 0x30, 0x39};
    int rl = 28;
    CHECK_EQ_INT(srtp_protect_rtcp(out, rtcp, &rl), srtp_err_status_ok);
    CHECK(rl > 28);
    CHECK_EQ_INT(srtp_unprotect_rtcp(in, rtcp, &rl), srtp_err_status_ok);
    CHECK_EQ_INT(rl, 28);
    srtp_dealloc(out);
    srtp_dealloc(in);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--protect") == 0)
        return protect_mode(strcmp(argv[2], "gcm") == 0);
    cu_err err = {""};
    CHECK_EQ_INT(ingest_srtp_init(&err), CU_OK); /* runs every known-answer test */
    CHECK(ingest_srtp_is_openssl());
    char self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    REQUIRE(n > 0);
    self[n] = '\0';
    for (int gcm = 0; gcm < 2; gcm++) {
        interop(self, true, gcm);
        interop(self, false, gcm);
        test_rejections(gcm);
    }
    return test_finish("test_srtp");
}
