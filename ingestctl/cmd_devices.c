/* ingestctl commands on identity, devices and recordings. */
#include "ingestctl.h"

#include <getopt.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Parse a command's options: each is "--name VALUE" or a flag "--name". */
typedef struct {
    const char *name;
    bool flag;
    const char *value; /* out: the value, or "1" for a flag given */
} cmd_opt;

static bool parse_opts(int argc, char **argv, cmd_opt *opts, size_t n, const char **positional,
                       const char *usage)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool matched = false;
        for (size_t k = 0; k < n && !matched; k++) {
            if (strncmp(a, "--", 2) != 0 || strcmp(a + 2, opts[k].name) != 0)
                continue;
            matched = true;
            if (opts[k].flag) {
                opts[k].value = "1";
            } else if (i + 1 < argc) {
                opts[k].value = argv[++i];
            } else {
                fprintf(stderr, "ingestctl: %s needs a value (usage: ingestctl %s)\n", a, usage);
                return false;
            }
        }
        if (matched)
            continue;
        if (positional && !*positional && strncmp(a, "--", 2) != 0) {
            *positional = a;
            continue;
        }
        fprintf(stderr, "ingestctl: unexpected '%s' (usage: ingestctl %s)\n", a, usage);
        return false;
    }
    return true;
}

static const char *opt_value(const cmd_opt *opts, size_t n, const char *name)
{
    for (size_t k = 0; k < n; k++)
        if (strcmp(opts[k].name, name) == 0)
            return opts[k].value;
    return NULL;
}

static void print_json(json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (text)
        printf("%s\n", text);
    free(text);
    json_decref(j);
}

/* The host recorders reach us by: rtsp.public_host, else this host's name. */
static void rtsp_public_host(const ctl_env *env, char *out, size_t len)
{
    if (env->cfg.rtsp_public_host[0]) {
        cu_strlcpy(out, env->cfg.rtsp_public_host, len);
        return;
    }
    if (gethostname(out, len) != 0 || !out[0])
        cu_strlcpy(out, "localhost", len);
    out[len - 1] = '\0';
}

/* ------------------------------------------------------------- identity */

int cmd_department_add(ctl_env *env, int argc, char **argv)
{
    static const char usage[] = "department add NAME [--parent NAME]";
    cmd_opt opts[] = {{"parent", false, NULL}};
    const char *name = NULL;
    cu_err err;
    int64_t id = 0;
    if (!parse_opts(argc, argv, opts, 1, &name, usage) || !name) {
        fprintf(stderr, "usage: ingestctl %s\n", usage);
        return 2;
    }
    ctl_change_begin(env);
    if (ctl_department_add(db_service_conn(env->db), name, opt_value(opts, 1, "parent"), &id,
                           &err) != CU_OK)
        return ctl_audited(env, "department.add", name, &err);
    if (ctl_audited(env, "department.add", name, NULL))
        return 1;
    printf("department %s (id %lld) added\n", name, (long long)id);
    return 0;
}

/* A TOTP secret for @p username; prints the otpauth:// URI once. */
static int enroll_totp(ctl_env *env, const char *username)
{
    keys_ring *keys = ctl_keys(env);
    char uri[CTL_TOTP_URI_MAX];
    cu_err err;
    if (!keys)
        return 1;
    ctl_change_begin(env);
    cu_rc rc = ctl_totp_enroll(db_service_conn(env->db), keys, username, uri, &err);
    if (rc)
        return ctl_audited(env, "user.totp_enroll", username, &err);
    if (ctl_audited(env, "user.totp_enroll", username, NULL)) {
        OPENSSL_cleanse(uri, sizeof(uri));
        return 1;
    }
    printf("  totp          %s\n"
           "                (shown once: load it into the user's authenticator app now)\n",
           uri);
    OPENSSL_cleanse(uri, sizeof(uri));
    return 0;
}

int cmd_user_totp(ctl_env *env, int argc, char **argv)
{
    const char *username = NULL;
    if (!parse_opts(argc, argv, NULL, 0, &username, "user totp USERNAME") || !username) {
        fprintf(stderr, "usage: ingestctl user totp USERNAME\n");
        return 2;
    }
    return enroll_totp(env, username);
}

int cmd_user_add(ctl_env *env, int argc, char **argv)
{
    static const char usage[] =
        "user add --username U --role officer|reviewer|admin [--department D] [--name N] "
        "[--password-stdin]";
    cmd_opt opts[] = {{"username", false, NULL},
                      {"role", false, NULL},
                      {"department", false, NULL},
                      {"name", false, NULL},
                      {"password-stdin", true, NULL}};
    cu_err err;
    int64_t id = 0;
    char password[CTL_PASSWORD_MAX + 2] = "";
    if (!parse_opts(argc, argv, opts, 5, NULL, usage) || !opts[0].value || !opts[1].value) {
        fprintf(stderr, "usage: ingestctl %s\n", usage);
        return 2;
    }
    if (opts[4].value) {
        /* One line; a line longer than the maximum is refused, not cut. */
        if (!fgets(password, sizeof(password), stdin)) {
            fprintf(stderr, "ingestctl: --password-stdin: no password on standard input\n");
            return 2;
        }
        size_t n = strcspn(password, "\r\n");
        if (password[n] == '\0' && n > CTL_PASSWORD_MAX) {
            OPENSSL_cleanse(password, sizeof(password));
            fprintf(stderr, "ingestctl: password: at most %d bytes\n", CTL_PASSWORD_MAX);
            return 2;
        }
        password[n] = '\0';
    }
    ctl_user_spec spec = {.username = opts[0].value,
                          .role = opts[1].value,
                          .department = opts[2].value,
                          .display_name = opts[3].value,
                          .password = opts[4].value ? password : NULL};
    ctl_change_begin(env);
    cu_rc rc = ctl_user_add(db_service_conn(env->db), &spec, &id, &err);
    OPENSSL_cleanse(password, sizeof(password));
    if (rc != CU_OK)
        return ctl_audited(env, "user.add", spec.username, &err);
    int status = ctl_audited(env, "user.add", spec.username, NULL);
    if (!status)
        printf("user %s (id %lld, %s) added%s\n", spec.username, (long long)id, spec.role,
               spec.password ? " with a password" : " (no password: cannot log in yet)");
    /* Admins log in with a second factor: their TOTP secret is made now. */
    if (!status && strcmp(spec.role, "admin") == 0)
        status = enroll_totp(env, spec.username);
    return status;
}

int cmd_user_list(ctl_env *env, int argc, char **argv)
{
    (void)argv;
    if (argc != 1) {
        fprintf(stderr, "usage: ingestctl user list\n");
        return 2;
    }
    PGconn *conn = db_service_conn(env->db);
    PGresult *res = PQexec(conn, "SELECT u.id, u.username, u.role, coalesce(d.name, ''), "
                                 "u.display_name, u.disabled_at IS NOT NULL "
                                 "FROM users u LEFT JOIN departments d ON d.id = u.department_id "
                                 "ORDER BY u.username");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "ingestctl: %s", PQerrorMessage(conn));
        PQclear(res);
        return 1;
    }
    printf("%-6s %-20s %-9s %-20s %s\n", "id", "username", "role", "department", "name");
    for (int i = 0; i < PQntuples(res); i++)
        printf("%-6s %-20s %-9s %-20s %s%s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
               PQgetvalue(res, i, 2), PQgetvalue(res, i, 3), PQgetvalue(res, i, 4),
               strcmp(PQgetvalue(res, i, 5), "t") == 0 ? " (disabled)" : "");
    PQclear(res);
    return 0;
}

/* -------------------------------------------------------------- devices */

int cmd_device_add(ctl_env *env, int argc, char **argv)
{
    static const char usage[] =
        "device add --serial S [--officer USER] [--suite SUITE] [--codec C] [--payload-type PT] "
        "[--pull rtsp://... [--pull-udp]] [--count N] [--json]";
    cmd_opt opts[] = {
        {"serial", false, NULL}, {"officer", false, NULL},      {"suite", false, NULL},
        {"codec", false, NULL},  {"payload-type", false, NULL}, {"json", true, NULL},
        {"count", false, NULL},  {"pull", false, NULL},         {"pull-udp", true, NULL}};
    cu_err err;
    keys_ring *keys = NULL;
    int status = 1;
    char host[256];
    if (!parse_opts(argc, argv, opts, 9, NULL, usage) || !opts[0].value) {
        fprintf(stderr, "usage: ingestctl %s\n", usage);
        return 2;
    }
    int64_t pt = 0, count = 1;
    if (opts[4].value && !cu_parse_int64(opts[4].value, &pt)) {
        fprintf(stderr, "ingestctl: --payload-type '%s' is not a number\n", opts[4].value);
        return 2;
    }
    if (opts[6].value && (!cu_parse_int64(opts[6].value, &count) || count < 1 || count > 100000)) {
        fprintf(stderr, "ingestctl: --count '%s' is not 1..100000\n", opts[6].value);
        return 2;
    }
    if (opts[7].value && count > 1) {
        fprintf(stderr, "ingestctl: --pull names one camera: not with --count\n");
        return 2;
    }
    if (opts[8].value && !opts[7].value) {
        fprintf(stderr, "ingestctl: --pull-udp goes with --pull\n");
        return 2;
    }
    rtsp_public_host(env, host, sizeof(host));
    if (!(keys = ctl_keys(env)))
        return 1;
    for (int64_t n = 1; n <= count; n++) {
        /* With --count, serials are S-00001, S-00002 ... */
        char serial[80];
        if (count > 1)
            snprintf(serial, sizeof(serial), "%s-%05lld", opts[0].value, (long long)n);
        else
            cu_strlcpy(serial, opts[0].value, sizeof(serial));
        ctl_device_spec spec = {.serial = serial,
                                .officer = opts[1].value,
                                .suite = opts[2].value,
                                .codec = opts[3].value,
                                .payload_type = (int)pt,
                                .pull_url = opts[7].value,
                                .pull_udp = opts[8].value != NULL};
        ctl_device d;
        ctl_change_begin(env);
        if (ctl_device_add(db_service_conn(env->db), keys, &spec, &d, &err) != CU_OK) {
            status = ctl_audited(env, "device.add", serial, &err);
            goto out;
        }
        status = ctl_audited(env, "device.add", serial, NULL);
        if (status) {
            ctl_device_wipe(&d);
            goto out;
        }
        char b64[128], sdp[200], rtsp_url[400] = "", rtsps_url[400] = "";
        EVP_EncodeBlock((unsigned char *)b64, d.key, (int)d.key_len);
        snprintf(sdp, sizeof(sdp), "a=crypto:1 %s inline:%s", ctl_suite_sdes_name(d.suite), b64);
        if (env->cfg.rtsp_port)
            snprintf(rtsp_url, sizeof(rtsp_url), "rtsp://%s:%lld/live/%s", host,
                     (long long)env->cfg.rtsp_port, d.serial);
        if (env->cfg.rtsps_port)
            snprintf(rtsps_url, sizeof(rtsps_url), "rtsps://%s:%lld/live/%s", host,
                     (long long)env->cfg.rtsps_port, d.serial);
        if (opts[5].value) {
            json_t *j = json_pack("{s:I, s:s, s:I, s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:s}", "id",
                                  (json_int_t)d.id, "serial", d.serial, "ssrc", (json_int_t)d.ssrc,
                                  "suite", d.suite, "key_b64", b64, "sdp", sdp, "codec", d.codec,
                                  "payload_type", d.payload_type, "clock_rate", d.clock_rate,
                                  "rtsp_user", d.serial, "rtsp_password", d.rtsp_password);
            if (j && rtsp_url[0])
                json_object_set_new(j, "rtsp_url", json_string(rtsp_url));
            if (j && rtsps_url[0])
                json_object_set_new(j, "rtsps_url", json_string(rtsps_url));
            if (j && spec.officer)
                json_object_set_new(j, "officer", json_string(spec.officer));
            if (j && spec.pull_url)
                json_object_set_new(j, "pull", json_string(spec.pull_udp ? "udp" : "tcp"));
            print_json(j);
        } else {
            printf("device %s (id %lld) provisioned\n"
                   "  ssrc          %u\n"
                   "  suite         %s\n"
                   "  codec         %s, payload type %d\n"
                   "  key           %s   (shown once: load it into the device now)\n"
                   "  sdp           %s\n"
                   "  rtsp url      %s\n"
                   "  rtsps url     %s\n"
                   "  rtsp user     %s\n"
                   "  rtsp password %s   (shown once)\n",
                   d.serial, (long long)d.id, d.ssrc, d.suite, d.codec, d.payload_type, b64, sdp,
                   rtsp_url[0] ? rtsp_url : "(rtsp.port is 0)",
                   rtsps_url[0] ? rtsps_url : "(rtsps.port is 0)", d.serial, d.rtsp_password);
            if (spec.pull_url)
                printf("  pulled over   %s, from the URL given (stored wrapped)\n",
                       spec.pull_udp ? "RTP/UDP" : "RTSP/TCP interleaved");
        }
        OPENSSL_cleanse(b64, sizeof(b64));
        OPENSSL_cleanse(sdp, sizeof(sdp));
        ctl_device_wipe(&d);
    }
    status = 0;
out:
    return status;
}

int cmd_device_list(ctl_env *env, int argc, char **argv)
{
    cmd_opt opts[] = {{"json", true, NULL}};
    if (!parse_opts(argc, argv, opts, 1, NULL, "device list [--json]"))
        return 2;
    PGconn *conn = db_service_conn(env->db);
    PGresult *res =
        PQexec(conn, "SELECT d.id, d.serial, d.ssrc, d.suite, d.codec, d.payload_type, d.state, "
                     "coalesce(u.username, ''), to_char(d.created_at AT TIME ZONE 'UTC', "
                     "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), coalesce(d.pull_transport, '') "
                     "FROM devices d LEFT JOIN device_assignments a ON a.device_id = d.id "
                     "AND a.assigned_until IS NULL LEFT JOIN users u ON u.id = a.user_id "
                     "ORDER BY d.id");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "ingestctl: %s", PQerrorMessage(conn));
        PQclear(res);
        return 1;
    }
    json_t *arr = opts[0].value ? json_array() : NULL;
    if (!arr)
        printf("%-6s %-20s %-11s %-24s %-6s %-8s %-5s %s\n", "id", "serial", "ssrc", "suite",
               "codec", "state", "pull", "officer");
    for (int i = 0; i < PQntuples(res); i++) {
        if (arr) {
            json_t *j = json_pack(
                "{s:I, s:s, s:I, s:s, s:s, s:i, s:s, s:s?, s:s}", "id",
                (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10), "serial",
                PQgetvalue(res, i, 1), "ssrc", (json_int_t)strtoll(PQgetvalue(res, i, 2), NULL, 10),
                "suite", PQgetvalue(res, i, 3), "codec", PQgetvalue(res, i, 4), "payload_type",
                (int)strtol(PQgetvalue(res, i, 5), NULL, 10), "state", PQgetvalue(res, i, 6),
                "officer", PQgetvalue(res, i, 7)[0] ? PQgetvalue(res, i, 7) : NULL, "created",
                PQgetvalue(res, i, 8));
            if (j && PQgetvalue(res, i, 9)[0])
                json_object_set_new(j, "pull", json_string(PQgetvalue(res, i, 9)));
            json_array_append_new(arr, j);
        } else {
            printf("%-6s %-20s %-11s %-24s %-6s %-8s %-5s %s\n", PQgetvalue(res, i, 0),
                   PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
                   PQgetvalue(res, i, 4), PQgetvalue(res, i, 6),
                   PQgetvalue(res, i, 9)[0] ? PQgetvalue(res, i, 9) : "-", PQgetvalue(res, i, 7));
        }
    }
    if (arr)
        print_json(arr);
    PQclear(res);
    return 0;
}

int cmd_device_revoke(ctl_env *env, int argc, char **argv)
{
    const char *device = NULL;
    cu_err err;
    if (!parse_opts(argc, argv, NULL, 0, &device, "device revoke ID|SERIAL") || !device) {
        fprintf(stderr, "usage: ingestctl device revoke ID|SERIAL\n");
        return 2;
    }
    ctl_change_begin(env);
    if (ctl_device_revoke(db_service_conn(env->db), device, &err) != CU_OK)
        return ctl_audited(env, "device.revoke", device, &err);
    printf("device %s revoked\n", device);
    return ctl_audited(env, "device.revoke", device, NULL);
}

int cmd_device_assign(ctl_env *env, int argc, char **argv)
{
    static const char usage[] = "device assign ID|SERIAL --officer USER";
    cmd_opt opts[] = {{"officer", false, NULL}};
    const char *device = NULL;
    cu_err err;
    if (!parse_opts(argc, argv, opts, 1, &device, usage) || !device || !opts[0].value) {
        fprintf(stderr, "usage: ingestctl %s\n", usage);
        return 2;
    }
    char object[200];
    snprintf(object, sizeof(object), "%s to %s", device, opts[0].value);
    ctl_change_begin(env);
    if (ctl_device_assign(db_service_conn(env->db), device, opts[0].value, &err) != CU_OK)
        return ctl_audited(env, "device.assign", object, &err);
    printf("device %s assigned to %s\n", device, opts[0].value);
    return ctl_audited(env, "device.assign", object, NULL);
}

/* ----------------------------------------------------------- recordings */

static void iso_time(const char *us_text, char out[32])
{
    out[0] = '\0';
    if (!us_text || !*us_text)
        return;
    int64_t us = strtoll(us_text, NULL, 10);
    cu_time_format_ms(us / 1000, out);
}

int cmd_recordings(ctl_env *env, int argc, char **argv)
{
    cmd_opt opts[] = {{"json", true, NULL}, {"limit", false, NULL}};
    if (!parse_opts(argc, argv, opts, 2, NULL, "recordings [--json] [--limit N]"))
        return 2;
    int64_t limit = 1000;
    if (opts[1].value && (!cu_parse_int64(opts[1].value, &limit) || limit < 1)) {
        fprintf(stderr, "ingestctl: --limit '%s' is not a positive number\n", opts[1].value);
        return 2;
    }
    char limit_text[24];
    snprintf(limit_text, sizeof(limit_text), "%lld", (long long)limit);
    const char *params[1] = {limit_text};
    PGconn *conn = db_service_conn(env->db);
    PGresult *res = PQexecParams(
        conn,
        /* What is acknowledged so far (the seal's count once closed), from
         * the counts the index keeps; losses from the listed rows' segments. */
        "SELECT r.id, coalesce(d.serial, ''), coalesce(u.username, ''), "
        "coalesce(r.first_start_us, (extract(epoch FROM r.opened_at) * 1000000)::bigint), "
        "r.last_end_us, coalesce(r.segment_count, r.acked_segments), r.acked_bytes, "
        "coalesce(s.lost, 0), coalesce(s.gaps, 0), r.state, coalesce(r.continues::text, '') "
        "FROM (SELECT * FROM recordings ORDER BY opened_at DESC LIMIT $1) r "
        "LEFT JOIN devices d ON d.id = r.device_id "
        "LEFT JOIN users u ON u.id = r.officer_id "
        "LEFT JOIN LATERAL (SELECT sum(lost) AS lost, count(*) FILTER (WHERE flags & 3 <> 0) "
        "                   AS gaps FROM segments WHERE recording_id = r.id) s ON true "
        "ORDER BY r.opened_at DESC",
        1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "ingestctl: %s", PQerrorMessage(conn));
        PQclear(res);
        return 1;
    }
    json_t *arr = opts[0].value ? json_array() : NULL;
    if (!arr)
        printf("%-36s %-14s %-12s %-24s %-24s %8s %12s %6s %s\n", "id", "device", "officer",
               "start", "end", "segments", "bytes", "lost", "state");
    for (int i = 0; i < PQntuples(res); i++) {
        char start[32], end[32];
        iso_time(PQgetvalue(res, i, 3), start);
        iso_time(PQgetisnull(res, i, 4) ? NULL : PQgetvalue(res, i, 4), end);
        if (arr) {
            json_t *j =
                json_pack("{s:s, s:s?, s:s?, s:s, s:s?, s:I, s:I, s:I, s:I, s:s}", "id",
                          PQgetvalue(res, i, 0), "device",
                          PQgetvalue(res, i, 1)[0] ? PQgetvalue(res, i, 1) : NULL, "officer",
                          PQgetvalue(res, i, 2)[0] ? PQgetvalue(res, i, 2) : NULL, "start", start,
                          "end", end[0] ? end : NULL, "segments",
                          (json_int_t)strtoll(PQgetvalue(res, i, 5), NULL, 10), "bytes",
                          (json_int_t)strtoll(PQgetvalue(res, i, 6), NULL, 10), "lost_packets",
                          (json_int_t)strtoll(PQgetvalue(res, i, 7), NULL, 10), "gap_segments",
                          (json_int_t)strtoll(PQgetvalue(res, i, 8), NULL, 10), "state",
                          PQgetvalue(res, i, 9));
            if (j && PQgetvalue(res, i, 10)[0])
                json_object_set_new(j, "continues", json_string(PQgetvalue(res, i, 10)));
            json_array_append_new(arr, j);
        } else {
            printf("%-36s %-14s %-12s %-24s %-24s %8s %12s %6s %s\n", PQgetvalue(res, i, 0),
                   PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), start, end, PQgetvalue(res, i, 5),
                   PQgetvalue(res, i, 6), PQgetvalue(res, i, 7), PQgetvalue(res, i, 9));
        }
    }
    if (arr)
        print_json(arr);
    PQclear(res);
    return 0;
}

/* ------------------------------------------------------ approval capacities */

/* Run @p sql with $1 = first, $2 = second; exactly one row must change. */
static int change_one(ctl_env *env, const char *sql, const char *first, const char *second,
                      const char *action, const char *what)
{
    PGconn *conn = db_service_conn(env->db);
    const char *params[2] = {first, second};
    ctl_change_begin(env);
    PGresult *res = PQexecParams(conn, sql, second ? 2 : 1, NULL, params, NULL, NULL, 0);
    cu_err err;
    char object[300];
    snprintf(object, sizeof(object), "%s%s%s", first, second ? " " : "", second ? second : "");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        cu_err_set(&err, CU_ERR_DB, "%s", PQerrorMessage(conn));
        PQclear(res);
        return ctl_audited(env, action, object, &err);
    }
    bool one = strcmp(PQcmdTuples(res), "1") == 0;
    PQclear(res);
    if (!one) {
        cu_err_set(&err, CU_ERR_NOTFOUND, "%s", what);
        return ctl_audited(env, action, object, &err);
    }
    return ctl_audited(env, action, object, NULL);
}

int cmd_department_head(ctl_env *env, int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: ingestctl department head DEPARTMENT USERNAME\n");
        return 2;
    }
    int rc = change_one(env,
                        "UPDATE departments SET head_user_id = (SELECT id FROM users WHERE "
                        "username = $2) WHERE name = $1 AND EXISTS (SELECT 1 FROM users WHERE "
                        "username = $2)",
                        argv[1], argv[2], "department.head", "no such department or user");
    if (!rc)
        printf("%s heads %s\n", argv[2], argv[1]);
    return rc;
}

int cmd_permission_group_add(ctl_env *env, int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: ingestctl permission-group add USERNAME\n");
        return 2;
    }
    int rc = change_one(env,
                        "INSERT INTO permission_group_members (user_id) SELECT id FROM users "
                        "WHERE username = $1 ON CONFLICT DO NOTHING",
                        argv[1], NULL, "permission_group.add",
                        "no such user, or already in the permission group");
    if (!rc)
        printf("%s is in the permission group\n", argv[1]);
    return rc;
}
