/*
 * A small blocking RTSP publisher for the bench and the tests: connect,
 * ANNOUNCE an SDP, SETUP one track interleaved on channels 0-1, RECORD,
 * then the caller writes interleaved frames on fd; TEARDOWN at the end.
 * Answers a digest challenge (SHA-256 with qop=auth) with the device's
 * credentials. Responses are parsed with ingestd's own framing parser.
 */
#ifndef CUSTOS_BENCH_RTSP_CLIENT_H
#define CUSTOS_BENCH_RTSP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int fd;
    int cseq;
    char url[512]; /* rtsp://host:port/live/<serial> */
    char user[80];
    char password[64];
    char nonce[64]; /* from the last challenge; "" before one */
    char session[64];
    int status; /* of the last request */
    char error[160];
} rtsp_client;

/** Connect to @p host:@p port for device @p serial. False: see c->error. */
bool rtsp_client_open(rtsp_client *c, const char *host, int port, const char *serial,
                      const char *password);

/**
 * ANNOUNCE @p sdp, SETUP its one track ("streamid=0", interleaved 0-1),
 * RECORD. False on any status but 200 (c->status says which).
 */
bool rtsp_client_publish(rtsp_client *c, const char *sdp);

/** One request; the status, or -1 when the connection failed. Digest retried once. */
int rtsp_client_request(rtsp_client *c, const char *method, const char *url, const char *headers,
                        const char *body);

/** TEARDOWN and close. */
bool rtsp_client_teardown(rtsp_client *c);

/** Close without TEARDOWN. */
void rtsp_client_close(rtsp_client *c);

/** Write all of @p len bytes (blocking). */
bool rtsp_client_write(rtsp_client *c, const void *p, size_t len);

#endif
