/*
 * udp_tap: capture datagrams on their way and send them again later, as an
 * attacker on the path would. On 127.0.0.1 only.
 *
 *   udp_tap relay LISTEN_PORT FORWARD_PORT FILE
 *       forwards every datagram arriving at LISTEN_PORT to FORWARD_PORT and
 *       appends it to FILE (each as a 4-byte big-endian length, then its
 *       bytes); prints "ready", runs until SIGTERM or SIGINT.
 *   udp_tap replay FILE PORT
 *       sends every datagram of FILE to PORT, 200 µs apart; prints how many.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DATAGRAM_MAX 65536

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static int port_of(const char *s)
{
    char *end;
    long p = strtol(s, &end, 10);
    return *end || p < 1 || p > 65535 ? -1 : (int)p;
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int relay(int listen_port, int forward_port, const char *path)
{
    int rc = 1;
    FILE *out = fopen(path, "wb");
    int in = socket(AF_INET, SOCK_DGRAM, 0), fwd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in here = loopback(listen_port), there = loopback(forward_port);
    static uint8_t buf[DATAGRAM_MAX];
    if (!out || in < 0 || fwd < 0 || bind(in, (struct sockaddr *)&here, sizeof(here)) != 0) {
        fprintf(stderr, "udp_tap: %s\n", strerror(errno));
        goto out;
    }
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: recv returns */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    printf("ready\n");
    fflush(stdout);
    long count = 0;
    while (!stopping) {
        ssize_t n = recv(in, buf, sizeof(buf), 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "udp_tap: %s\n", strerror(errno));
            goto out;
        }
        uint8_t len[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
        if (fwrite(len, 1, 4, out) != 4 || fwrite(buf, 1, (size_t)n, out) != (size_t)n) {
            fprintf(stderr, "udp_tap: cannot write %s\n", path);
            goto out;
        }
        sendto(fwd, buf, (size_t)n, 0, (struct sockaddr *)&there, sizeof(there));
        count++;
    }
    printf("relayed %ld\n", count);
    rc = 0;
out:
    if (out && fclose(out) != 0)
        rc = 1;
    if (in >= 0)
        close(in);
    if (fwd >= 0)
        close(fwd);
    return rc;
}

static int replay(const char *path, int port)
{
    int rc = 1;
    FILE *in = fopen(path, "rb");
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in there = loopback(port);
    static uint8_t buf[DATAGRAM_MAX];
    long count = 0;
    if (!in || s < 0) {
        fprintf(stderr, "udp_tap: %s: %s\n", path, strerror(errno));
        goto out;
    }
    uint8_t len[4];
    while (fread(len, 1, 4, in) == 4) {
        size_t n = (size_t)len[0] << 24 | (size_t)len[1] << 16 | (size_t)len[2] << 8 | len[3];
        if (n > sizeof(buf) || fread(buf, 1, n, in) != n) {
            fprintf(stderr, "udp_tap: %s is cut short\n", path);
            goto out;
        }
        if (sendto(s, buf, n, 0, (struct sockaddr *)&there, sizeof(there)) < 0) {
            fprintf(stderr, "udp_tap: %s\n", strerror(errno));
            goto out;
        }
        count++;
        nanosleep(&(struct timespec){0, 200000}, NULL);
    }
    printf("replayed %ld\n", count);
    rc = 0;
out:
    if (in)
        fclose(in);
    if (s >= 0)
        close(s);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "relay") == 0 && port_of(argv[2]) > 0 &&
        port_of(argv[3]) > 0)
        return relay(port_of(argv[2]), port_of(argv[3]), argv[4]);
    if (argc == 4 && strcmp(argv[1], "replay") == 0 && port_of(argv[3]) > 0)
        return replay(argv[2], port_of(argv[3]));
    fprintf(stderr, "usage: udp_tap relay LISTEN_PORT FORWARD_PORT FILE | replay FILE PORT\n");
    return 2;
}
