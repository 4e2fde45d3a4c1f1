/* ingestctl export: a recording's MP4 clip, offline (docs/export.md). */
#include "ingestctl.h"

#include "export/export.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int fd;
    int error; /* errno of a failed write */
} file_out;

static bool write_all(void *ctx, const uint8_t *data, size_t len)
{
    file_out *f = ctx;
    while (len) {
        ssize_t n = write(f->fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            f->error = n < 0 ? errno : EIO;
            return false;
        }
        data += n;
        len -= (size_t)n;
    }
    return true;
}

static void usage(void)
{
    fprintf(stderr, "usage: ingestctl export --recording ID [--start RFC3339] [--end RFC3339] "
                    "--out FILE.mp4|-\n");
}

int cmd_export(ctl_env *env, int argc, char **argv)
{
    static const struct option options[] = {
        {"recording", required_argument, NULL, 'r'},
        {"start", required_argument, NULL, 's'},
        {"end", required_argument, NULL, 'e'},
        {"out", required_argument, NULL, 'o'},
        {NULL, 0, NULL, 0},
    };
    store_id id;
    bool have_id = false;
    const char *out_path = NULL;
    export_clip_opts o = {.fragmented = false};
    int opt;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "+r:s:e:o:", options, NULL)) != -1) {
        bool ok = true;
        if (opt == 'r')
            ok = have_id = store_id_parse(optarg, &id);
        else if (opt == 's')
            ok = cu_time_parse_us(optarg, &o.start_us);
        else if (opt == 'e')
            ok = cu_time_parse_us(optarg, &o.end_us);
        else if (opt == 'o')
            out_path = optarg;
        else
            ok = false;
        if (!ok) {
            if (opt == 's' || opt == 'e')
                fprintf(stderr, "ingestctl: --%s %s: not an RFC 3339 time\n",
                        opt == 's' ? "start" : "end", optarg);
            usage();
            return 2;
        }
    }
    if (!have_id || !out_path || optind < argc) {
        usage();
        return 2;
    }
    if (o.start_us && o.end_us && o.end_us <= o.start_us) {
        fprintf(stderr, "ingestctl: --end must be after --start\n");
        return 2;
    }
    keys_ring *keys = ctl_keys(env);
    if (!keys)
        return 1;

    /* Written beside its name and renamed once complete: never half a clip
     * under the name asked for. */
    bool to_stdout = strcmp(out_path, "-") == 0;
    char tmp[PATH_MAX];
    file_out f = {.fd = STDOUT_FILENO};
    if (!to_stdout) {
        if (snprintf(tmp, sizeof(tmp), "%s.part", out_path) >= (int)sizeof(tmp)) {
            fprintf(stderr, "ingestctl: --out: path too long\n");
            return 2;
        }
        f.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (f.fd < 0) {
            fprintf(stderr, "ingestctl: %s: %s (ingestctl runs as the '%s' account)\n", tmp,
                    strerror(errno), env->cfg.db_pg_user);
            return 1;
        }
    }
    char rec[37], from[CU_TIME_TEXT_LEN] = "start", to[CU_TIME_TEXT_LEN] = "end";
    store_id_format(&id, rec);
    cu_err err;
    export_clip_report rep;
    store_reader *rd = NULL;
    cu_rc rc = export_init(ctl_data_dir(env), &err);
    if (!rc)
        rc = store_reader_open(ctl_data_dir(env), db_service_conn(env->db), keys, &id, &rd, &err);
    if (!rc)
        rc = export_clip(rd, &o, write_all, &f, &rep, &err);
    store_reader_close(rd);
    if (f.error) /* (the export stopped because a write failed: say which, and why) */
        rc = cu_err_set(&err, CU_ERR_IO, "%s: %s", to_stdout ? "stdout" : tmp, strerror(f.error));
    if (!rc && !to_stdout && (fsync(f.fd) != 0 || rename(tmp, out_path) != 0))
        rc = cu_err_set(&err, CU_ERR_IO, "%s: %s", out_path, strerror(errno));
    if (!to_stdout) {
        close(f.fd);
        if (rc)
            unlink(tmp);
    }
    if (o.start_us)
        cu_time_format_ms(o.start_us / 1000, from);
    if (o.end_us)
        cu_time_format_ms(o.end_us / 1000, to);
    char object[400];
    if (rc) {
        snprintf(object, sizeof(object), "recording:%s from %s to %s", rec, from, to);
        return ctl_audited(env, "recording.export", object, &err);
    }
    char sha[65], first[CU_TIME_TEXT_LEN], last[CU_TIME_TEXT_LEN];
    cu_hex_encode(rep.sha256, 32, sha);
    cu_time_format_ms(rep.first_us / 1000, first);
    cu_time_format_ms(rep.last_us / 1000, last);
    snprintf(object, sizeof(object), "recording:%s from %s to %s mp4 %llu bytes sha256 %s", rec,
             from, to, (unsigned long long)rep.bytes, sha);
    int status = ctl_audited(env, "recording.export", object, NULL);
    FILE *report = to_stdout ? stderr : stdout;
    fprintf(report,
            "{\"recording\":\"%s\",\"codec\":\"%s\",\"first\":\"%s\",\"last\":\"%s\","
            "\"segments\":[%llu,%llu],\"packets\":%llu,\"lost\":%llu,\"bytes\":%llu,"
            "\"sdp_parameter_sets\":%s,\"sha256\":\"%s\"}\n",
            rec, rep.codec, first, last, (unsigned long long)rep.first_segment,
            (unsigned long long)rep.last_segment, (unsigned long long)rep.packets,
            (unsigned long long)rep.lost, (unsigned long long)rep.bytes,
            rep.sdp_parameter_sets ? "true" : "false", sha);
    return status;
}
