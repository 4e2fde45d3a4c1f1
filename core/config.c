/*
 * Table-driven configuration (after redis config.c): one row per setting.
 * The INI syntax is read by inih; this file owns names, types, bounds,
 * defaults and the error messages an operator sees.
 */
#include "core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONFIG_FILE_MAX (1024 * 1024)
#define CONFIG_LINE_MAX 4096

typedef enum { CFG_STRING, CFG_INT, CFG_ENUM } cfg_type;

enum {
    CFG_F_DSN = 1 << 0, /* mask a password when printing */
};

/* Extra validation for a string value; returns false and explains in @p why. */
typedef bool (*cfg_check_fn)(const char *value, char *why, size_t why_len);

typedef struct {
    const char *name;
    cfg_type type;
    size_t offset;              /* of the field in cu_config */
    int64_t min, max;           /* CFG_INT: value bounds; CFG_STRING: length bounds */
    const char *def;            /* default, parsed like any other value */
    const char *doc;            /* one line */
    const char *const *choices; /* CFG_ENUM: NULL-terminated names */
    cfg_check_fn check;
    unsigned flags;
} cfg_row;

static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};

static bool check_ip_literal(const char *v, char *why, size_t why_len)
{
    unsigned char addr[16];
    if (inet_pton(AF_INET, v, addr) == 1 || inet_pton(AF_INET6, v, addr) == 1)
        return true;
    snprintf(why, why_len, "is not an IPv4 or IPv6 address");
    return false;
}

static bool check_pg_user(const char *v, char *why, size_t why_len)
{
    for (const char *p = v; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.')) {
            snprintf(why, why_len, "is not a valid user name");
            return false;
        }
    }
    return true;
}

#define OFF(field) offsetof(cu_config, field)

static const cfg_row config_table[] = {
    {"data.dir", CFG_STRING, OFF(data_dir), 1, 3800, "./var",
     "Directory for evidence, keys, the embedded database and the lock file.", NULL, NULL, 0},
    {"log.level", CFG_ENUM, OFF(log_level), 0, 0, "info",
     "Least severe level written: error, warn, info or debug.", log_levels, NULL, 0},
    {"log.file", CFG_STRING, OFF(log_file), 0, 3800, "",
     "Append log lines to this file (reopened on SIGHUP); empty writes to stderr.", NULL, NULL, 0},
    {"http.bind", CFG_STRING, OFF(http_bind), 1, 64, "127.0.0.1",
     "Address of the operations HTTP listener (/healthz, /metrics).", NULL, check_ip_literal, 0},
    {"http.port", CFG_INT, OFF(http_port), 1, 65535, "8080",
     "TCP port of the operations HTTP listener.", NULL, NULL, 0},
    {"http.timeout_s", CFG_INT, OFF(http_timeout_s), 1, 3600, "30",
     "Close an HTTP connection that is idle or slow for this many seconds.", NULL, NULL, 0},
    {"db.dsn", CFG_STRING, OFF(db_dsn), 0, 4096, "",
     "libpq connection string of an external PostgreSQL; empty runs the embedded cluster in "
     "<data.dir>/pg.",
     NULL, NULL, CFG_F_DSN},
    {"db.owner_dsn", CFG_STRING, OFF(db_owner_dsn), 0, 4096, "",
     "libpq connection string of the role that owns the schema and runs migrations (external "
     "server only; docs/database.md); empty: migrations are not run, the schema must be current.",
     NULL, NULL, CFG_F_DSN},
    {"db.pg_bindir", CFG_STRING, OFF(db_pg_bindir), 0, 3800, "",
     "Directory holding initdb and postgres; empty asks pg_config, then /usr/lib/postgresql/*/bin.",
     NULL, NULL, 0},
    {"db.pg_user", CFG_STRING, OFF(db_pg_user), 1, 63, CU_SERVICE_ACCOUNT,
     "Started as root, ingestd, ingestctl and the embedded cluster run as this unprivileged "
     "account (custos: made as a system account when missing), which owns the data dir.",
     NULL, check_pg_user, 0},
    {"db.start_timeout_s", CFG_INT, OFF(db_start_timeout_s), 1, 600, "60",
     "Give up when the embedded PostgreSQL is not accepting connections after this long.", NULL,
     NULL, 0},
    {"db.stop_timeout_s", CFG_INT, OFF(db_stop_timeout_s), 1, 600, "10",
     "Wait this long for the embedded PostgreSQL to stop before forcing it.", NULL, NULL, 0},
    {"keys.dir", CFG_STRING, OFF(keys_dir), 0, 3800, "",
     "Directory of the key-encryption keys and the signing key (0700, checked at every start); "
     "empty: <data.dir>/keys.",
     NULL, NULL, 0},
    {"audit.checkpoint_s", CFG_INT, OFF(audit_checkpoint_s), 1, 3600, "60",
     "Write a signed audit checkpoint this often while the audit log moves (and at every stop).",
     NULL, NULL, 0},
    {"alerts.command", CFG_STRING, OFF(alerts_command), 0, 3800, "",
     "Run (/bin/sh -c) for each security alert, the alert as JSON on its standard input; "
     "retried until it exits 0 (docs/alerts.md). Empty: alerts are only listed by the API.",
     NULL, NULL, 0},
    {"alerts.command_timeout_s", CFG_INT, OFF(alerts_command_timeout_s), 1, 300, "10",
     "A run of alerts.command still going after this long is killed and tried again later.", NULL,
     NULL, 0},
    {"audit.checkpoint_command", CFG_STRING, OFF(audit_checkpoint_command), 0, 3800, "",
     "Shell command run with each new checkpoint line on stdin (copy it to WORM storage, "
     "syslog, another machine); empty: none.",
     NULL, NULL, 0},
    {"ingest.bind", CFG_STRING, OFF(ingest_bind), 1, 64, "0.0.0.0",
     "Address the SRTP/RTP receivers listen on (recorders in the field reach it).", NULL,
     check_ip_literal, 0},
    {"ingest.udp_port", CFG_INT, OFF(ingest_udp_port), 1, 65535, "5004",
     "UDP port for SRTP/RTP and SRTCP from recorders (RTP and RTCP muxed).", NULL, NULL, 0},
    {"ingest.workers", CFG_INT, OFF(ingest_workers), 0, 64, "0",
     "Receive threads, each with its own SO_REUSEPORT socket; 0 means one per CPU.", NULL, NULL, 0},
    {"ingest.rcvbuf_bytes", CFG_INT, OFF(ingest_rcvbuf_bytes), 65536, 1073741824, "33554432",
     "Socket receive buffer asked of the kernel per worker (it may cap it; logged).", NULL, NULL,
     0},
    {"ingest.reorder_packets", CFG_INT, OFF(ingest_reorder_packets), 1, 1024, "64",
     "Reorder window: packets held while waiting for a missing one.", NULL, NULL, 0},
    {"ingest.reorder_ms", CFG_INT, OFF(ingest_reorder_ms), 1, 5000, "100",
     "Reorder window: longest wait for a missing packet before it is counted lost.", NULL, NULL, 0},
    {"ingest.idle_timeout_s", CFG_INT, OFF(ingest_idle_timeout_s), 1, 3600, "10",
     "Close a recording when its device has sent nothing for this long.", NULL, NULL, 0},
    {"ingest.device_poll_ms", CFG_INT, OFF(ingest_device_poll_ms), 50, 60000, "500",
     "How often new, changed and revoked devices are read from the database.", NULL, NULL, 0},
    {"ingest.replay_save_ms", CFG_INT, OFF(ingest_replay_save_ms), 100, 60000, "500",
     "How often each device's highest accepted SRTP index is saved, so that packets captured "
     "before a restart are refused after it (docs/srtp-replay.md).",
     NULL, NULL, 0},
    {"ingest.coalesce_us", CFG_INT, OFF(ingest_coalesce_us), 0, 100000, "10000",
     "While a socket is busy, read it this often rather than on every datagram (0: always "
     "on arrival).",
     NULL, NULL, 0},
    {"rtsp.bind", CFG_STRING, OFF(rtsp_bind), 1, 64, "0.0.0.0",
     "Address the RTSP and RTSPS listeners bind (recorders that publish, docs/rtsp.md).", NULL,
     check_ip_literal, 0},
    {"rtsp.port", CFG_INT, OFF(rtsp_port), 0, 65535, "8554",
     "TCP port for RTSP (publish with ANNOUNCE/RECORD); 0 turns plain RTSP off.", NULL, NULL, 0},
    {"rtsps.port", CFG_INT, OFF(rtsps_port), 0, 65535, "8322",
     "TCP port for RTSP over TLS; 0 turns RTSPS off.", NULL, NULL, 0},
    {"rtsp.public_host", CFG_STRING, OFF(rtsp_public_host), 0, 253, "",
     "Host name recorders use to reach this server (in the URLs ingestctl prints); empty means "
     "this machine's host name.",
     NULL, NULL, 0},
    {"rtsps.cert_file", CFG_STRING, OFF(rtsps_cert_file), 0, 3800, "",
     "PEM certificate chain for RTSPS; empty makes a self-signed one in <data.dir>/tls.", NULL,
     NULL, 0},
    {"rtsps.key_file", CFG_STRING, OFF(rtsps_key_file), 0, 3800, "",
     "PEM private key for rtsps.cert_file.", NULL, NULL, 0},
    {"rtsp.max_header_bytes", CFG_INT, OFF(rtsp_max_header_bytes), 1024, 1048576, "16384",
     "Largest request line plus headers accepted (larger: 400 and the connection closed).", NULL,
     NULL, 0},
    {"rtsp.max_body_bytes", CFG_INT, OFF(rtsp_max_body_bytes), 1024, 1048576, "65536",
     "Largest request body (an SDP) accepted (larger: 413 and the connection closed).", NULL, NULL,
     0},
    {"rtsp.max_output_bytes", CFG_INT, OFF(rtsp_max_output_bytes), 4096, 67108864, "262144",
     "Answers a client has not read, at most (more: the connection is closed).", NULL, NULL, 0},
    {"rtsp.request_timeout_s", CFG_INT, OFF(rtsp_request_timeout_s), 1, 600, "10",
     "Close a connection whose request is not complete this long after it began.", NULL, NULL, 0},
    {"rtsp.session_timeout_s", CFG_INT, OFF(rtsp_session_timeout_s), 5, 3600, "60",
     "Tear down a session that sends no request, RTCP or media for this long.", NULL, NULL, 0},
    {"rtsp.max_sessions_per_device", CFG_INT, OFF(rtsp_max_sessions_per_device), 1, 64, "2",
     "Sessions one device may hold at once (more: 453).", NULL, NULL, 0},
    {"rtsp.max_connections_per_address", CFG_INT, OFF(rtsp_max_connections_per_address), 1, 1000000,
     "32", "RTSP connections one client address may hold at once.", NULL, NULL, 0},
    {"rtsp.max_connections", CFG_INT, OFF(rtsp_max_connections), 1, 1000000, "4096",
     "RTSP connections held at once, all addresses together.", NULL, NULL, 0},
    {"rtsp.udp_port_min", CFG_INT, OFF(rtsp_udp_port_min), 1024, 65534, "40000",
     "First of the UDP ports (in pairs) offered to RTSP publishers and pulls that use UDP.", NULL,
     NULL, 0},
    {"rtsp.udp_port_max", CFG_INT, OFF(rtsp_udp_port_max), 1025, 65535, "40999",
     "Last of the UDP ports offered for RTSP over UDP.", NULL, NULL, 0},
    {"rtsp.pull_backoff_max_s", CFG_INT, OFF(rtsp_pull_backoff_max_s), 1, 3600, "60",
     "Longest wait between attempts to reconnect to a camera we pull from.", NULL, NULL, 0},
    {"rtsp.allow_md5", CFG_INT, OFF(rtsp_allow_md5), 0, 1, "0",
     "1 accepts (and, pulling, answers) Digest with MD5 besides SHA-256: needed by GStreamer "
     "1.22 clients and older cameras, but a captured MD5 exchange is cheap to crack offline.",
     NULL, NULL, 0},
    {"rtsp.pull_redirect_any_host", CFG_INT, OFF(rtsp_pull_redirect_any_host), 0, 1, "0",
     "1 lets a camera we pull from redirect us to another host; 0 follows a redirect only to "
     "the same host (the credentials go where the redirect points).",
     NULL, NULL, 0},
    {"rtsp.pull_ca_file", CFG_STRING, OFF(rtsp_pull_ca_file), 0, 3800, "",
     "PEM certificates trusted for rtsps:// cameras we pull from; empty: the system's.", NULL, NULL,
     0},
    {"api.bind", CFG_STRING, OFF(api_bind), 1, 64, "0.0.0.0",
     "Address the HTTPS JSON API listens on (docs/control.md).", NULL, check_ip_literal, 0},
    {"api.port", CFG_INT, OFF(api_port), 0, 65535, "8443", "HTTPS API port; 0 turns the API off.",
     NULL, NULL, 0},
    {"api.cert_file", CFG_STRING, OFF(api_cert_file), 0, 3800, "",
     "PEM certificate chain for the API; empty makes a self-signed one in <data.dir>/tls.", NULL,
     NULL, 0},
    {"api.key_file", CFG_STRING, OFF(api_key_file), 0, 3800, "",
     "PEM private key for api.cert_file.", NULL, NULL, 0},
    {"api.workers", CFG_INT, OFF(api_workers), 0, 64, "0",
     "API handler threads, each with its own database connection; 0 is two per CPU.", NULL, NULL,
     0},
    {"export.max_concurrent", CFG_INT, OFF(export_max_concurrent), 1, 64, "2",
     "Clips and package downloads sent at once (each holds an API handler thread while it "
     "streams); beyond, 503 busy with Retry-After.",
     NULL, NULL, 0},
    {"export.package_keep_h", CFG_INT, OFF(export_package_keep_h), 1, 8760, "168",
     "Hours a built evidence package is kept for download under <data.dir>/packages; then its "
     "file is removed (the record of it stays).",
     NULL, NULL, 0},
    {"api.login_failures_per_source", CFG_INT, OFF(api_login_failures_per_source), 1, 100000, "20",
     "Failed logins one source address may make in a minute; beyond, its logins are answered "
     "429 without being checked.",
     NULL, NULL, 0},
    {"api.login_concurrency", CFG_INT, OFF(api_login_concurrency), 1, 64, "2",
     "Password checks (argon2id, 64 MiB each) run at once; one more for an account logging in "
     "from an address it used before; beyond, 503 at once.",
     NULL, NULL, 0},
    {"api.queue_max_bytes", CFG_INT, OFF(api_queue_max_bytes), 65536, 1073741824, "16777216",
     "Bytes of requests waiting for a handler, at most; beyond, 503 at once.", NULL, NULL, 0},
    {"api.max_body_bytes", CFG_INT, OFF(api_max_body_bytes), 1024, 16777216, "65536",
     "Largest request body the API reads (larger: 413).", NULL, NULL, 0},
    {"live.max_viewers", CFG_INT, OFF(live_max_viewers), 1, 100000, "200",
     "Live viewers (WHEP sessions) at once, all streams together; beyond, 503.", NULL, NULL, 0},
    {"live.max_viewers_per_stream", CFG_INT, OFF(live_max_viewers_per_stream), 1, 10000, "20",
     "Live viewers of one stream at once; beyond, 429.", NULL, NULL, 0},
    {"live.max_viewers_per_user", CFG_INT, OFF(live_max_viewers_per_user), 1, 10000, "16",
     "Live sessions one user holds at once (a wall of streams counts each); beyond, 429.", NULL,
     NULL, 0},
    {"live.max_transcodes", CFG_INT, OFF(live_max_transcodes), 0, 256, "2",
     "H.265 streams transcoded to H.264 at once for browsers (each takes most of a core); a "
     "viewer of one more answers 503.",
     NULL, NULL, 0},
    {"live.viewer_timeout_s", CFG_INT, OFF(live_viewer_timeout_s), 3, 600, "15",
     "A live viewer that sends no RTCP for this long (gone without ending its session, or no "
     "longer reading) is ended.",
     NULL, NULL, 0},
    {"live.ice_addresses", CFG_STRING, OFF(live_ice_addresses), 0, 400, "",
     "Comma-separated IP addresses ICE offers live viewers; empty: api.bind (0.0.0.0: every "
     "interface).",
     NULL, NULL, 0},
    {"segment.target_ms", CFG_INT, OFF(segment_target_ms), 100, 10000, "2000",
     "Cut a segment at the first keyframe after this long (audio: at this long).", NULL, NULL, 0},
    {"segment.max_ms", CFG_INT, OFF(segment_max_ms), 1000, 10000, "10000",
     "Cut a segment at the next access unit after this long, keyframe or not.", NULL, NULL, 0},
    {"store.workers", CFG_INT, OFF(store_workers), 0, 256, "0",
     "Threads that hash, encrypt and write segments; 0 means four per CPU.", NULL, NULL, 0},
    {"store.syncers", CFG_INT, OFF(store_syncers), 1, 64, "4",
     "Threads issuing fsync, so that several are in flight at once.", NULL, NULL, 0},
    {"store.queue_segments", CFG_INT, OFF(store_queue_segments), 1, 4096, "64",
     "Segments waiting per worker before new ones are refused and counted as shortfall.", NULL,
     NULL, 0},
    {"store.index_wait_s", CFG_INT, OFF(store_index_wait_s), 0, 600, "10",
     "At shutdown, wait this long for the index to reach PostgreSQL (the rest is rebuilt at "
     "the next start).",
     NULL, NULL, 0},
};

#undef OFF

static const cfg_row *config_find(const char *key)
{
    for (size_t i = 0; i < CU_ARRAY_LEN(config_table); i++)
        if (strcmp(config_table[i].name, key) == 0)
            return &config_table[i];
    return NULL;
}

/* Edit distance, for "did you mean". Names are short; a 64-column row does. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 64;
    size_t prev[64], cur[64];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, sizeof(prev[0]) * (lb + 1));
    }
    return prev[lb];
}

static const char *config_suggest(const char *key)
{
    const char *best = NULL;
    size_t best_d = 4; /* suggest only close misspellings */
    for (size_t i = 0; i < CU_ARRAY_LEN(config_table); i++) {
        size_t d = edit_distance(key, config_table[i].name);
        if (d < best_d) {
            best_d = d;
            best = config_table[i].name;
        }
    }
    return best;
}

static cu_rc config_apply(cu_config *cfg, const cfg_row *row, const char *value, cu_err *err)
{
    char *field = (char *)cfg + row->offset;
    size_t vlen = strlen(value);

    /* Allow "quoted values" so leading and trailing blanks survive. */
    char unquoted[CONFIG_LINE_MAX + 1];
    if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {
        if (vlen - 2 > CONFIG_LINE_MAX)
            return cu_err_set(err, CU_ERR_CONFIG, "%s: value is longer than %d bytes", row->name,
                              CONFIG_LINE_MAX);
        memcpy(unquoted, value + 1, vlen - 2);
        unquoted[vlen - 2] = '\0';
        value = unquoted;
        vlen -= 2;
    }

    switch (row->type) {
    case CFG_STRING: {
        if ((int64_t)vlen < row->min || (int64_t)vlen > row->max) {
            if (row->min > 0 && vlen == 0)
                return cu_err_set(err, CU_ERR_CONFIG, "%s: must not be empty", row->name);
            return cu_err_set(err, CU_ERR_CONFIG, "%s: value is %zu bytes long, allowed %lld..%lld",
                              row->name, vlen, (long long)row->min, (long long)row->max);
        }
        char why[128];
        if (row->check && !row->check(value, why, sizeof(why)))
            return cu_err_set(err, CU_ERR_CONFIG, "%s: '%s' %s", row->name, value, why);
        char **slot = (char **)(void *)field;
        free(*slot);
        *slot = cu_xstrdup(value);
        return CU_OK;
    }
    case CFG_INT: {
        int64_t v;
        if (!cu_parse_int64(value, &v))
            return cu_err_set(err, CU_ERR_CONFIG, "%s: '%s' is not an integer (allowed %lld..%lld)",
                              row->name, value, (long long)row->min, (long long)row->max);
        if (v < row->min || v > row->max)
            return cu_err_set(err, CU_ERR_CONFIG, "%s: %lld is out of range (allowed %lld..%lld)",
                              row->name, (long long)v, (long long)row->min, (long long)row->max);
        memcpy(field, &v, sizeof(v));
        return CU_OK;
    }
    case CFG_ENUM: {
        for (int i = 0; row->choices[i]; i++) {
            if (strcmp(value, row->choices[i]) == 0) {
                memcpy(field, &i, sizeof(i));
                return CU_OK;
            }
        }
        char list[256] = "";
        size_t pos = 0;
        for (int i = 0; row->choices[i] && pos < sizeof(list); i++) {
            int n =
                snprintf(list + pos, sizeof(list) - pos, "%s%s", i ? ", " : "", row->choices[i]);
            if (n < 0)
                break;
            pos += (size_t)n;
        }
        return cu_err_set(err, CU_ERR_CONFIG, "%s: '%s' is not one of: %s", row->name, value, list);
    }
    }
    return cu_err_set(err, CU_ERR_CONFIG, "%s: unsupported type", row->name);
}

cu_rc cu_config_set(cu_config *cfg, const char *key, const char *value, cu_err *err)
{
    const cfg_row *row = config_find(key);
    if (!row) {
        const char *hint = config_suggest(key);
        if (hint)
            return cu_err_set(err, CU_ERR_CONFIG, "unknown setting '%s' (did you mean '%s'?)", key,
                              hint);
        return cu_err_set(err, CU_ERR_CONFIG,
                          "unknown setting '%s' (ingestd --print-config lists them)", key);
    }
    return config_apply(cfg, row, value, err);
}

void cu_config_keys_dir(const cu_config *cfg, const char *data_dir, char *out, size_t len)
{
    if (cfg->keys_dir && cfg->keys_dir[0])
        snprintf(out, len, "%s", cfg->keys_dir);
    else
        snprintf(out, len, "%s/keys", data_dir);
}

cu_rc cu_config_set_assignment(cu_config *cfg, const char *assignment, cu_err *err)
{
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return cu_err_set(err, CU_ERR_CONFIG, "'%s' is not of the form KEY=VALUE", assignment);
    size_t klen = (size_t)(eq - assignment);
    char key[128];
    if (klen >= sizeof(key))
        return cu_err_set(err, CU_ERR_CONFIG, "setting name '%.40s...' is too long", assignment);
    memcpy(key, assignment, klen);
    key[klen] = '\0';
    return cu_config_set(cfg, key, eq + 1, err);
}

void cu_config_init(cu_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < CU_ARRAY_LEN(config_table); i++) {
        cu_err err;
        if (config_apply(cfg, &config_table[i], config_table[i].def, &err) != CU_OK) {
            /* A default that fails its own row is a programming error. */
            fprintf(stderr, "fatal: bad default: %s\n", err.msg);
            abort();
        }
    }
}

void cu_config_free(cu_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < CU_ARRAY_LEN(config_table); i++) {
        if (config_table[i].type != CFG_STRING)
            continue;
        char **slot = (char **)(void *)((char *)cfg + config_table[i].offset);
        free(*slot);
        *slot = NULL;
    }
}

/* ------------------------------------------------------------ INI files */

typedef struct {
    cu_config *cfg;
    const char *path;
    int line;         /* best-effort line of the current pair, for messages */
    const char *text; /* whole file, to find the line of a failing pair */
    int seen_line[CU_ARRAY_LEN(config_table)];
    cu_err first;
    bool failed;
} ini_ctx;

/* inih reports the failing line only after the parse; find it from the key
 * so that the message names the line at once. */
static int ini_line_of(const char *text, const char *name, int after)
{
    int line = 1;
    const char *p = text;
    while (*p) {
        const char *start = p;
        while (*start == ' ' || *start == '\t')
            start++;
        size_t n = strlen(name);
        if (line > after && strncmp(start, name, n) == 0 &&
            (start[n] == '=' || start[n] == ':' || start[n] == ' ' || start[n] == '\t'))
            return line;
        p = strchr(p, '\n');
        if (!p)
            break;
        p++;
        line++;
    }
    return 0;
}

static int ini_on_pair(void *user, const char *section, const char *name, const char *value)
{
    ini_ctx *ctx = user;
    char key[160];
    cu_err err;

    if (ctx->failed)
        return 0;
    int n = section[0] ? snprintf(key, sizeof(key), "%s.%s", section, name)
                       : snprintf(key, sizeof(key), "%s", name);
    int line = ini_line_of(ctx->text, name, ctx->line);
    if (line > 0)
        ctx->line = line;
    if (n < 0 || (size_t)n >= sizeof(key)) {
        cu_err_set(&ctx->first, CU_ERR_CONFIG, "%s:%d: setting name is too long", ctx->path,
                   ctx->line);
        goto fail;
    }
    const cfg_row *row = config_find(key);
    if (row) {
        size_t idx = (size_t)(row - config_table);
        if (ctx->seen_line[idx]) {
            cu_err_set(&ctx->first, CU_ERR_CONFIG, "%s:%d: %s is already set on line %d", ctx->path,
                       ctx->line, key, ctx->seen_line[idx]);
            goto fail;
        }
        ctx->seen_line[idx] = ctx->line ? ctx->line : -1;
    }
    if (cu_config_set(ctx->cfg, key, value, &err) != CU_OK) {
        cu_err_set(&ctx->first, CU_ERR_CONFIG, "%s:%d: %s", ctx->path, ctx->line, err.msg);
        goto fail;
    }
    return 1;
fail:
    ctx->failed = true;
    return 0;
}

/* Read the whole file, bounded, refusing what is not a small text file. */
static cu_rc config_read_file(const char *path, char **out, cu_err *err)
{
    cu_rc rc = CU_OK;
    char *text = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return cu_err_set(err, CU_ERR_CONFIG, "cannot read config file %s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = cu_err_set(err, CU_ERR_CONFIG, "config file %s is not a regular file", path);
        goto out;
    }
    if (st.st_size > CONFIG_FILE_MAX) {
        rc = cu_err_set(err, CU_ERR_CONFIG, "config file %s is larger than %d bytes", path,
                        CONFIG_FILE_MAX);
        goto out;
    }
    size_t size = (size_t)st.st_size;
    text = cu_xmalloc(size + 1);
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, text + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            rc =
                cu_err_set(err, CU_ERR_CONFIG, "cannot read config file %s: %s", path, strerror(e));
            goto out;
        }
        got += (size_t)r;
    }
    text[size] = '\0';
    if (memchr(text, '\0', size)) {
        rc = cu_err_set(err, CU_ERR_CONFIG, "config file %s contains a NUL byte", path);
        goto out;
    }
    int line = 1;
    size_t line_len = 0;
    for (size_t i = 0; i < size; i++) {
        if (text[i] == '\n') {
            line++;
            line_len = 0;
        } else if (++line_len > CONFIG_LINE_MAX) {
            rc = cu_err_set(err, CU_ERR_CONFIG, "%s:%d: line is longer than %d bytes", path, line,
                            CONFIG_LINE_MAX);
            goto out;
        }
    }
    *out = text;
    text = NULL;
out:
    free(text);
    close(fd);
    return rc;
}

cu_rc cu_config_load_file(cu_config *cfg, const char *path, cu_err *err)
{
    char *text = NULL;
    cu_rc rc = config_read_file(path, &text, err);
    if (rc)
        return rc;

    /* inih's knobs are process-wide; these are the ones this syntax uses. */
    ini_use_stack = false;
    ini_max_line = CONFIG_LINE_MAX + 3;
    ini_allow_multiline = false;
    /* Comments take whole lines only: values are verbatim, so a ';' in a
     * DSN or a path is never mistaken for the start of a comment. */
    ini_allow_inline_comments = false;
    ini_allow_no_value = false;
    ini_stop_on_first_error = true;

    ini_ctx ctx = {.cfg = cfg, .path = path, .text = text};
    int r = ini_parse_string(text, ini_on_pair, &ctx);
    if (ctx.failed) {
        rc = cu_err_set(err, CU_ERR_CONFIG, "%s", ctx.first.msg);
    } else if (r > 0) {
        rc = cu_err_set(err, CU_ERR_CONFIG,
                        "%s:%d: syntax error (expected [section] or name = value)", path, r);
    } else if (r < 0) {
        rc = cu_err_set(err, CU_ERR_NOMEM, "%s: out of memory while parsing", path);
    }
    free(text);
    return rc;
}

cu_rc cu_config_load(cu_config *cfg, const char *file, const char *data_dir, char *const *sets,
                     size_t nsets, cu_err *err)
{
    cu_rc rc = CU_OK;
    cu_err inner;
    cu_config_init(cfg);
    if (file) {
        rc = cu_config_load_file(cfg, file, err);
        if (rc)
            return rc;
    }
    if (data_dir) {
        rc = cu_config_set(cfg, "data.dir", data_dir, &inner);
        if (rc)
            return cu_err_set(err, rc, "--data-dir: %s", inner.msg);
    }
    for (size_t i = 0; i < nsets; i++) {
        rc = cu_config_set_assignment(cfg, sets[i], &inner);
        if (rc)
            return cu_err_set(err, rc, "--set %s: %s", sets[i], inner.msg);
    }
    return CU_OK;
}

/* ---------------------------------------------------------------- print */

/* Copy @p s into @p out with bytes [start, end) replaced by asterisks. */
static void mask_span(const char *s, size_t start, size_t end, char *out, size_t out_len)
{
    snprintf(out, out_len, "%.*s********%s", (int)start, s, s + end);
}

/* Copy a DSN with any password replaced, in both libpq syntaxes:
 * "... password=secret ..." and "postgresql://user:secret@host/...". */
static void dsn_mask(const char *dsn, char *out, size_t out_len)
{
    char tmp[CONFIG_LINE_MAX + 64];
    cu_strlcpy(tmp, dsn, sizeof(tmp));
    const char *p = strstr(tmp, "password=");
    if (p) {
        size_t start = (size_t)(p - tmp) + strlen("password="), end = start;
        if (tmp[end] == '\'') {
            for (end++; tmp[end] && tmp[end] != '\''; end++)
                if (tmp[end] == '\\' && tmp[end + 1])
                    end++;
            if (tmp[end])
                end++;
        } else {
            while (tmp[end] && tmp[end] != ' ')
                end++;
        }
        char masked[sizeof(tmp)];
        mask_span(tmp, start, end, masked, sizeof(masked));
        cu_strlcpy(tmp, masked, sizeof(tmp));
    }
    const char *scheme = strstr(tmp, "://");
    if (scheme) {
        const char *at = strchr(scheme + 3, '@');
        const char *colon = strchr(scheme + 3, ':');
        if (at && colon && colon < at) {
            char masked[sizeof(tmp)];
            mask_span(tmp, (size_t)(colon + 1 - tmp), (size_t)(at - tmp), masked, sizeof(masked));
            cu_strlcpy(tmp, masked, sizeof(tmp));
        }
    }
    cu_strlcpy(out, tmp, out_len);
}

static void config_value_text(const cu_config *cfg, const cfg_row *row, char *out, size_t len)
{
    const char *field = (const char *)cfg + row->offset;
    switch (row->type) {
    case CFG_STRING: {
        const char *s = *(char *const *)(const void *)field;
        if (row->flags & CFG_F_DSN)
            dsn_mask(s ? s : "", out, len);
        else
            cu_strlcpy(out, s ? s : "", len);
        break;
    }
    case CFG_INT: {
        int64_t v;
        memcpy(&v, field, sizeof(v));
        snprintf(out, len, "%lld", (long long)v);
        break;
    }
    case CFG_ENUM: {
        int i;
        memcpy(&i, field, sizeof(i));
        snprintf(out, len, "%s", row->choices[i]);
        break;
    }
    }
}

void cu_config_print(const cu_config *cfg, FILE *out)
{
    char section[64] = "";
    fprintf(out,
            "; Custos %s configuration: effective values, defaults included.\n"
            "; Comments are whole lines starting with ';' or '#'; values are taken verbatim.\n",
            CUSTOS_VERSION);
    for (size_t i = 0; i < CU_ARRAY_LEN(config_table); i++) {
        const cfg_row *row = &config_table[i];
        const char *dot = strchr(row->name, '.');
        size_t slen = (size_t)(dot - row->name);
        if (strlen(section) != slen || strncmp(section, row->name, slen) != 0) {
            snprintf(section, sizeof(section), "%.*s", (int)slen, row->name);
            fprintf(out, "\n[%s]\n", section);
        }
        char value[4200];
        config_value_text(cfg, row, value, sizeof(value));
        fprintf(out, "; %s\n", row->doc);
        if (row->type == CFG_INT)
            fprintf(out, "; default %s, allowed %lld..%lld\n", row->def, (long long)row->min,
                    (long long)row->max);
        else
            fprintf(out, "; default \"%s\"\n", row->def);
        /* Quote values that inih would otherwise trim or cut at a comment. */
        bool quote = value[0] == '\0' || value[0] == ' ' || value[strlen(value) - 1] == ' ';
        fprintf(out, "%s = %s%s%s\n", dot + 1, quote ? "\"" : "", value, quote ? "\"" : "");
    }
}
