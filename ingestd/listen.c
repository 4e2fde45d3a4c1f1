/* Listening sockets, with errors that name the setting to change. */
#include "ingestd.h"

#include <errno.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

cu_rc ingest_listen_tcp(const char *addr, int port, const char *what, int *fd_out, cu_err *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *ai = NULL;
    char port_text[8];
    int fd = -1, one = 1;
    cu_rc rc = CU_OK;

    snprintf(port_text, sizeof(port_text), "%d", port);
    int gai = getaddrinfo(addr, port_text, &hints, &ai);
    if (gai != 0)
        return cu_err_set(err, CU_ERR_CONFIG, "%s: bad listen address %s: %s", what, addr,
                          gai_strerror(gai));
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        rc = cu_err_set(err, CU_ERR_IO, "%s: socket: %s", what, strerror(e));
        goto out;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 511) != 0) {
        int e = errno;
        rc = cu_err_set(err, e == EADDRINUSE ? CU_ERR_BUSY : CU_ERR_IO,
                        "%s: cannot listen on %s%s%s:%d: %s", what,
                        ai->ai_family == AF_INET6 ? "[" : "", addr,
                        ai->ai_family == AF_INET6 ? "]" : "", port, strerror(e));
        goto out;
    }
    *fd_out = fd;
    fd = -1;
out:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return rc;
}

cu_rc ingest_udp_port_free(const char *addr, int port, const char *what, cu_err *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_DGRAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *ai = NULL;
    char port_text[8];
    snprintf(port_text, sizeof(port_text), "%d", port);
    int gai = getaddrinfo(addr, port_text, &hints, &ai);
    if (gai != 0)
        return cu_err_set(err, CU_ERR_CONFIG, "%s: bad listen address %s: %s", what, addr,
                          gai_strerror(gai));
    cu_rc rc = CU_OK;
    int fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        int e = errno;
        rc = cu_err_set(err, e == EADDRINUSE ? CU_ERR_BUSY : CU_ERR_IO,
                        "%s: cannot listen on %s:%d/udp: %s", what, addr, port, strerror(e));
    }
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return rc;
}
