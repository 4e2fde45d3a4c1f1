/*
 * bench/srtp: microseconds to unprotect one 1200-byte SRTP packet
 * (AES-CM-128 + HMAC-SHA1-80, and AEAD AES-256-GCM) with libsrtp's own NSS
 * primitives and with ours (OpenSSL), measured side by side in one run:
 * the NSS figures come from a child process started with CUSTOS_SRTP_NSS=1.
 */
#include "ingestd/ingestd.h"

#include <srtp2/srtp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PACKETS 20000

static double measure(bool gcm)
{
    uint8_t key[46];
    memset(key, 0x5a, sizeof(key));
    srtp_policy_t p;
    memset(&p, 0, sizeof(p));
    if (gcm) {
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p.rtp);
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p.rtcp);
    } else {
        srtp_crypto_policy_set_rtp_default(&p.rtp);
        srtp_crypto_policy_set_rtcp_default(&p.rtcp);
    }
    p.key = key;
    p.window_size = 256;
    p.ssrc.type = ssrc_any_outbound;
    srtp_t out = NULL, in = NULL;
    if (srtp_create(&out, &p) != srtp_err_status_ok)
        abort();
    p.ssrc.type = ssrc_any_inbound;
    if (srtp_create(&in, &p) != srtp_err_status_ok)
        abort();
    uint8_t(*pkts)[1300] = malloc(sizeof(*pkts) * PACKETS);
    int *lens = malloc(sizeof(int) * PACKETS);
    for (int i = 0; i < PACKETS; i++) {
        memset(pkts[i], 0x33, 1200);
        pkts[i][0] = 0x80;
        pkts[i][1] = 96;
        pkts[i][2] = (uint8_t)(i >> 8);
        pkts[i][3] = (uint8_t)i;
        pkts[i][8] = 1;
        lens[i] = 1200;
        if (srtp_protect(out, pkts[i], &lens[i]) != srtp_err_status_ok)
            abort();
    }
    int64_t t0 = cu_mono_ns();
    for (int i = 0; i < PACKETS; i++)
        if (srtp_unprotect(in, pkts[i], &lens[i]) != srtp_err_status_ok)
            abort();
    double us = (double)(cu_mono_ns() - t0) / 1000.0 / PACKETS;
    srtp_dealloc(out);
    srtp_dealloc(in);
    free(pkts);
    free(lens);
    return us;
}

int main(int argc, char **argv)
{
    cu_err err;
    if (ingest_srtp_init(&err) != CU_OK) {
        fprintf(stderr, "bench/srtp: %s\n", err.msg);
        return 1;
    }
    double cm = measure(false), gcm = measure(true);
    if (argc > 1 && strcmp(argv[1], "--child") == 0) {
        printf("%.3f %.3f\n", cm, gcm);
        return 0;
    }
    char cmd[1100], self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return 1;
    self[n] = '\0';
    snprintf(cmd, sizeof(cmd), "CUSTOS_SRTP_NSS=1 %s --child", self);
    FILE *f = popen(cmd, "r");
    double nss_cm = 0, nss_gcm = 0;
    if (!f || fscanf(f, "%lf %lf", &nss_cm, &nss_gcm) != 2) {
        fprintf(stderr, "bench/srtp: the NSS run failed\n");
        return 1;
    }
    pclose(f);
    printf(
        "{\"packet_bytes\": 1200, \"packets\": %d, "
        "\"aes_cm_128_hmac_sha1_80\": {\"nss_us\": %.3f, \"openssl_us\": %.3f, \"speedup\": %.2f}, "
        "\"aead_aes_256_gcm\": {\"nss_us\": %.3f, \"openssl_us\": %.3f, \"speedup\": %.2f}}\n",
        PACKETS, nss_cm, cm, nss_cm / cm, nss_gcm, gcm, nss_gcm / gcm);
    return 0;
}
