/*
 * ingest_inject DEVICE_JSON PORT: send ingestd one datagram of every kind it
 * must refuse, on 127.0.0.1: a good SRTP packet, then the same packet again
 * (replay) from the same port and from REPLAY_PORTS others, a packet with a
 * corrupted tag (authentication), an SRTP-valid packet whose RTP is malformed
 * (padding count past the payload), an oversize datagram, and a packet from
 * an unknown SSRC. Prints what it sent.
 */
#include "ingestd/ingestd.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <srtp2/srtp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define REPLAY_PORTS 8

static size_t rtp(uint8_t *b, uint32_t ssrc, uint16_t seq, bool bad_padding)
{
    memset(b, 0, 200);
    b[0] = bad_padding ? 0xa0 : 0x80;
    b[1] = 96;
    b[2] = (uint8_t)(seq >> 8);
    b[3] = (uint8_t)seq;
    b[8] = (uint8_t)(ssrc >> 24);
    b[9] = (uint8_t)(ssrc >> 16);
    b[10] = (uint8_t)(ssrc >> 8);
    b[11] = (uint8_t)ssrc;
    b[12] = 0x41; /* a non-IDR slice */
    if (bad_padding)
        b[99] = 200; /* padding count past the payload */
    return 100;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: ingest_inject DEVICE_JSON PORT\n");
        return 2;
    }
    cu_err err;
    if (ingest_srtp_init(&err) != CU_OK)
        return 1;
    json_error_t je;
    json_t *dev = json_loads(argv[1], 0, &je);
    const char *b64 = dev ? json_string_value(json_object_get(dev, "key_b64")) : NULL;
    uint32_t ssrc = dev ? (uint32_t)json_integer_value(json_object_get(dev, "ssrc")) : 0;
    uint8_t key[64];
    if (!b64 || strlen(b64) != 40 || EVP_DecodeBlock(key, (const unsigned char *)b64, 40) != 30) {
        fprintf(stderr, "ingest_inject: need an aes_cm_128_hmac_sha1_80 device\n");
        return 2;
    }
    srtp_policy_t p;
    memset(&p, 0, sizeof(p));
    srtp_crypto_policy_set_rtp_default(&p.rtp);
    srtp_crypto_policy_set_rtcp_default(&p.rtcp);
    p.ssrc.type = ssrc_specific;
    p.ssrc.value = ssrc;
    p.key = key;
    p.window_size = 128;
    srtp_t s;
    if (srtp_create(&s, &p) != srtp_err_status_ok)
        return 1;

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    if (connect(fd, (struct sockaddr *)&to, sizeof(to)) != 0)
        return 1;

    uint8_t good[300], b[3000];
    int len = (int)rtp(good, ssrc, 1000, false);
    srtp_protect(s, good, &len);
    int sent = 0;
    sent += send(fd, good, (size_t)len, 0) > 0; /* accepted */
    sent += send(fd, good, (size_t)len, 0) > 0; /* replay */
    /* The same replay from other source ports, as a recorder behind a NAT
     * that rebinds (or an attacker) would send it: whichever ingest worker
     * the address lands on, the device's one replay window must refuse it. */
    for (int i = 0; i < REPLAY_PORTS; i++) {
        int other = socket(AF_INET, SOCK_DGRAM, 0);
        sent += other >= 0 &&
                sendto(other, good, (size_t)len, 0, (struct sockaddr *)&to, sizeof(to)) > 0;
        if (other >= 0)
            close(other);
    }
    len = (int)rtp(b, ssrc, 1003, false); /* a fresh index: the replay check passes */
    srtp_protect(s, b, &len);
    b[len - 1] ^= 0xff;
    sent += send(fd, b, (size_t)len, 0) > 0; /* authentication */
    len = (int)rtp(b, ssrc, 1001, true);
    srtp_protect(s, b, &len);
    sent += send(fd, b, (size_t)len, 0) > 0; /* malformed RTP inside valid SRTP */
    memset(b, 0, 2500);
    rtp(b, ssrc, 1002, false);
    sent += send(fd, b, 2500, 0) > 0; /* oversize */
    len = (int)rtp(b, ssrc ^ 0x5a5a5a5a, 7, false);
    sent += send(fd, b, (size_t)len, 0) > 0; /* unknown SSRC */
    printf("sent %d datagrams\n", sent);
    srtp_dealloc(s);
    close(fd);
    json_decref(dev);
    return sent == 6 + REPLAY_PORTS ? 0 : 1;
}
