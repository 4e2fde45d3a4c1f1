/*
 * bench/api_client: N keep-alive HTTPS clients, each sending one GET after
 * another for S seconds, checking every answer is 200 with a whole body.
 * Prints one JSON object: requests, errors, requests_per_s, p50_ms, p99_ms.
 *
 *   api_client --port P --token T --cacert PEM [--path /api/v1/recordings]
 *              [--clients 2] [--seconds 10]
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 4000000
#define BUF         (1 << 20)

typedef struct {
    int port;
    const char *token, *path;
    SSL_CTX *ctx;
    double seconds;
    uint32_t *lat_us; /* per request */
    size_t n, errors;
} client;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static SSL *connect_tls(client *c)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        return NULL;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    SSL *ssl = SSL_new(c->ctx);
    SSL_set_fd(ssl, fd);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), "127.0.0.1");
    if (SSL_connect(ssl) != 1) {
        ERR_print_errors_fp(stderr);
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    return ssl;
}

/* One request and its whole response; the status, or -1 when the connection broke. */
static int one_request(SSL *ssl, client *c, char *buf)
{
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n",
                     c->path, c->token);
    if (SSL_write(ssl, req, n) != n)
        return -1;
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        int r = SSL_read(ssl, buf + have, (int)(BUF - 1 - have));
        if (r <= 0)
            return -1;
        have += (size_t)r;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (!end && have >= BUF - 1)
            return -1;
    }
    int status = (int)strtol(buf + 9, NULL, 10); /* "HTTP/1.1 200" */
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    size_t body = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
    size_t total = (size_t)(end + 4 - buf) + body;
    while (have < total) {
        int r = SSL_read(ssl, buf + have, (int)(BUF - 1 - have));
        if (r <= 0)
            return -1;
        have += (size_t)r;
    }
    return have == total ? status : -1;
}

static void *run(void *arg)
{
    client *c = arg;
    char *buf = malloc(BUF);
    SSL *ssl = connect_tls(c);
    double end = now_s() + c->seconds;
    while (ssl && now_s() < end && c->n < MAX_SAMPLES) {
        double t0 = now_s();
        int status = one_request(ssl, c, buf);
        double dt = now_s() - t0;
        if (status == 200)
            c->lat_us[c->n++] = (uint32_t)(dt * 1e6);
        else
            c->errors++;
        if (status < 0) { /* reconnect */
            SSL_free(ssl);
            ssl = connect_tls(c);
        }
    }
    if (!ssl)
        c->errors++;
    SSL_free(ssl);
    free(buf);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int port = 0, clients = 2;
    double seconds = 10;
    const char *token = NULL, *cacert = NULL, *path = "/api/v1/recordings";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port"))
            port = (int)strtol(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--token"))
            token = argv[i + 1];
        else if (!strcmp(argv[i], "--cacert"))
            cacert = argv[i + 1];
        else if (!strcmp(argv[i], "--path"))
            path = argv[i + 1];
        else if (!strcmp(argv[i], "--clients"))
            clients = (int)strtol(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--seconds"))
            seconds = strtod(argv[i + 1], NULL);
    }
    if (port < 1 || port > 65535 || !token || !cacert || clients < 1 || clients > 64 ||
        seconds <= 0) {
        fprintf(stderr, "usage: api_client --port P --token T --cacert PEM [--path P] "
                        "[--clients N] [--seconds S]\n");
        return 2;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (SSL_CTX_load_verify_locations(ctx, cacert, NULL) != 1) {
        fprintf(stderr, "api_client: cannot load %s\n", cacert);
        return 1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    client *cs = calloc((size_t)clients, sizeof(*cs));
    pthread_t *th = calloc((size_t)clients, sizeof(*th));
    for (int i = 0; i < clients; i++) {
        cs[i] = (client){.port = port,
                         .token = token,
                         .path = path,
                         .ctx = ctx,
                         .seconds = seconds,
                         .lat_us = malloc(MAX_SAMPLES * sizeof(uint32_t))};
        pthread_create(&th[i], NULL, run, &cs[i]);
    }
    size_t total = 0, errors = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(th[i], NULL);
        total += cs[i].n;
        errors += cs[i].errors;
    }
    uint32_t *all = malloc((total ? total : 1) * sizeof(uint32_t));
    size_t k = 0;
    for (int i = 0; i < clients; i++) {
        memcpy(all + k, cs[i].lat_us, cs[i].n * sizeof(uint32_t));
        k += cs[i].n;
    }
    qsort(all, total, sizeof(uint32_t), cmp_u32);
    double p50 = total ? all[total / 2] / 1000.0 : 0,
           p99 = total ? all[total * 99 / 100] / 1000.0 : 0;
    printf("{\"clients\": %d, \"seconds\": %.0f, \"requests\": %zu, \"errors\": %zu, "
           "\"requests_per_s\": %.1f, \"p50_ms\": %.2f, \"p99_ms\": %.2f}\n",
           clients, seconds, total, errors, total / seconds, p50, p99);
    return errors ? 1 : 0;
}
