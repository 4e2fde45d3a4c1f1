/* ingestctl export and package: a recording's MP4 clip and its evidence
 * package, offline (docs/export.md, docs/package.md). */
#include "ingestctl.h"

#include "export/export.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int fd;
    int error; /* errno of a failed write */
    bool to_stdout;
    char path[PATH_MAX], tmp[PATH_MAX];
} file_out;

static bool write_all(void *ctx, const uint8_t *data, size_t len)
{
    file_out *f = ctx;
    if (!cu_write_all(f->fd, data, len)) {
        f->error = errno;
        return false;
    }
    return true;
}

/* --out: written beside its name and renamed once complete (never half a
 * file under the name asked for), or stdout for "-". False: said why. */
static bool out_open(ctl_env *env, const char *path, file_out *f)
{
    memset(f, 0, sizeof(*f));
    f->fd = STDOUT_FILENO;
    f->to_stdout = strcmp(path, "-") == 0;
    if (f->to_stdout)
        return true;
    if (!cu_strlcpy(f->path, path, sizeof(f->path)) ||
        snprintf(f->tmp, sizeof(f->tmp), "%s.part", path) >= (int)sizeof(f->tmp)) {
        fprintf(stderr, "ingestctl: --out: path too long\n");
        return false;
    }
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (f->fd < 0) {
        fprintf(stderr, "ingestctl: %s: %s (ingestctl runs as the '%s' account)\n", f->tmp,
                strerror(errno), env->cfg.db_pg_user);
        return false;
    }
    return true;
}

/* Settle --out after the export's @p rc: a failed write named, the file
 * made durable and renamed, or removed. */
static cu_rc out_close(file_out *f, cu_rc rc, cu_err *err)
{
    if (f->error) /* (the export stopped because a write failed: say which, and why) */
        rc = cu_err_set(err, CU_ERR_IO, "%s: %s", f->to_stdout ? "stdout" : f->tmp,
                        strerror(f->error));
    if (f->to_stdout)
        return rc;
    if (!rc && (fsync(f->fd) != 0 || rename(f->tmp, f->path) != 0))
        rc = cu_err_set(err, CU_ERR_IO, "%s: %s", f->path, strerror(errno));
    close(f->fd);
    if (rc)
        unlink(f->tmp);
    return rc;
}

/* What export and package are asked: a recording, a range, where to. */
typedef struct {
    store_id id;
    const char *out;
    const char *reason; /* package only */
    int64_t start_us, end_us;
} out_args;

/* --recording --start --end --out (and --reason with @p reason_too); false
 * (usage printed as @p usage) when they are not right. */
static bool parse_out_args(int argc, char **argv, bool reason_too, const char *usage, out_args *a)
{
    static const struct option options[] = {
        {"recording", required_argument, NULL, 'r'}, {"start", required_argument, NULL, 's'},
        {"end", required_argument, NULL, 'e'},       {"reason", required_argument, NULL, 'w'},
        {"out", required_argument, NULL, 'o'},       {NULL, 0, NULL, 0},
    };
    bool have_id = false, ok = true;
    int opt;
    optind = 0;
    while (ok && (opt = getopt_long(argc, argv, "+r:s:e:w:o:", options, NULL)) != -1) {
        if (opt == 'r') {
            ok = have_id = store_id_parse(optarg, &a->id);
        } else if (opt == 's' || opt == 'e') {
            ok = cu_time_parse_us(optarg, opt == 's' ? &a->start_us : &a->end_us);
            if (!ok)
                fprintf(stderr, "ingestctl: --%s %s: not an RFC 3339 time\n",
                        opt == 's' ? "start" : "end", optarg);
        } else if (opt == 'w' && reason_too) {
            ok = strlen(optarg) <= 1000 && cu_utf8_valid(optarg);
            a->reason = optarg;
        } else if (opt == 'o') {
            a->out = optarg;
        } else {
            ok = false;
        }
    }
    if (ok && a->start_us && a->end_us && a->end_us <= a->start_us) {
        fprintf(stderr, "ingestctl: --end must be after --start\n");
        ok = false;
    }
    if (!ok || !have_id || !a->out || optind < argc) {
        fprintf(stderr, "usage: %s\n", usage);
        return false;
    }
    return true;
}

int cmd_export(ctl_env *env, int argc, char **argv)
{
    out_args a = {0};
    if (!parse_out_args(argc, argv, false,
                        "ingestctl export --recording ID [--start RFC3339] [--end RFC3339] "
                        "--out FILE.mp4|-",
                        &a))
        return 2;
    store_id id = a.id;
    const char *out_path = a.out;
    export_clip_opts o = {.fragmented = false, .start_us = a.start_us, .end_us = a.end_us};
    keys_ring *keys = ctl_keys(env);
    if (!keys)
        return 1;

    file_out f;
    if (!out_open(env, out_path, &f))
        return 1;
    char rec[37], from[CU_TIME_TEXT_LEN] = "start", to[CU_TIME_TEXT_LEN] = "end";
    store_id_format(&id, rec);
    cu_err err;
    export_clip_report rep;
    cu_rc rc = export_init(ctl_data_dir(env), &err);
    export_source src = {0};
    if (!rc) /* (with the capture's other tracks: its audio) */
        rc = export_source_open(ctl_data_dir(env), db_service_conn(env->db), keys, &id, NULL, &src,
                                &err);
    o.audio = src.tracks;
    o.naudio = src.ntracks;
    if (!rc)
        rc = export_clip(src.rd, &o, write_all, &f, &rep, &err);
    export_source_close(&src);
    rc = out_close(&f, rc, &err);
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
    FILE *report = f.to_stdout ? stderr : stdout;
    fprintf(report,
            "{\"recording\":\"%s\",\"codec\":\"%s\",\"first\":\"%s\",\"last\":\"%s\","
            "\"segments\":[%llu,%llu],\"packets\":%llu,\"lost\":%llu,\"bytes\":%llu,"
            "\"sdp_parameter_sets\":%s,\"audio_tracks\":%u,\"audio_packets\":%llu,"
            "\"audio_skipped\":%u,\"sha256\":\"%s\"}\n",
            rec, rep.codec, first, last, (unsigned long long)rep.first_segment,
            (unsigned long long)rep.last_segment, (unsigned long long)rep.packets,
            (unsigned long long)rep.lost, (unsigned long long)rep.bytes,
            rep.sdp_parameter_sets ? "true" : "false", rep.audio_tracks,
            (unsigned long long)rep.audio_packets, rep.audio_skipped, sha);
    return status;
}

/* ---------------------------------------------------------------- package */

int cmd_package(ctl_env *env, int argc, char **argv)
{
    out_args a = {.reason = "made with ingestctl package"};
    if (!parse_out_args(argc, argv, true,
                        "ingestctl package --recording ID [--start RFC3339] [--end RFC3339] "
                        "[--reason TEXT] --out FILE.zip|-",
                        &a))
        return 2;
    store_id id = a.id;
    const char *out_path = a.out, *reason = a.reason;
    int64_t start_us = a.start_us, end_us = a.end_us;
    keys_ring *keys = ctl_keys(env);
    if (!keys)
        return 1;
    file_out f;
    if (!out_open(env, out_path, &f))
        return 1;
    char rec[37], pkg[37], actor[96], checkpoint[CTL_CHECKPOINT_LINE_MAX + 1] = "";
    store_id_format(&id, rec);
    store_id pkg_id;
    if (RAND_bytes(pkg_id.b, sizeof(pkg_id.b)) != 1) {
        fprintf(stderr, "ingestctl: no randomness for the package id\n");
        return 1;
    }
    store_id_format(&pkg_id, pkg);
    snprintf(actor, sizeof(actor), "ingestctl:%s", env->invoker[0] ? env->invoker : "?");
    cu_err err;
    export_package_report rep;
    cu_rc rc = export_init(ctl_data_dir(env), &err);
    if (!rc)
        rc = ctl_checkpoint_latest(ctl_data_dir(env), checkpoint, sizeof(checkpoint), &err);
    export_source src = {0};
    if (!rc) /* (with the capture's other tracks) */
        rc = export_source_open(ctl_data_dir(env), db_service_conn(env->db), keys, &id, NULL, &src,
                                &err);
    if (!rc) {
        export_package_opts o = {.package_id = pkg,
                                 .tracks = src.tracks,
                                 .ntracks = src.ntracks,
                                 .start_us = start_us,
                                 .end_us = end_us,
                                 .reason = reason,
                                 .made_by = actor,
                                 .conn = db_service_conn(env->db),
                                 .keys = keys,
                                 .checkpoint = checkpoint};
        rc = export_package(src.rd, &o, write_all, &f, &rep, &err);
    }
    export_source_close(&src);
    rc = out_close(&f, rc, &err);
    char from[CU_TIME_TEXT_LEN] = "start", to[CU_TIME_TEXT_LEN] = "end", object[400];
    if (start_us)
        cu_time_format_ms(start_us / 1000, from);
    if (end_us)
        cu_time_format_ms(end_us / 1000, to);
    if (rc) {
        snprintf(object, sizeof(object), "recording:%s package %s from %s to %s", rec, pkg, from,
                 to);
        return ctl_audited(env, "recording.package", object, &err);
    }
    char sha[65];
    cu_hex_encode(rep.sha256, 32, sha);
    snprintf(object, sizeof(object),
             "recording:%s package %s from %s to %s zip %llu bytes sha256 %s", rec, pkg, from, to,
             (unsigned long long)rep.bytes, sha);
    int status = ctl_audited(env, "recording.package", object, NULL);
    fprintf(f.to_stdout ? stderr : stdout,
            "{\"package\":\"%s\",\"recording\":\"%s\",\"segments\":[%llu,%llu],\"packets\":%llu,"
            "\"custody_entries\":%llu,\"clip\":%s,\"bytes\":%llu,\"sha256\":\"%s\"}\n",
            pkg, rec, (unsigned long long)rep.first_segment, (unsigned long long)rep.last_segment,
            (unsigned long long)rep.packets, (unsigned long long)rep.custody_entries,
            rep.clip ? "true" : "false", (unsigned long long)rep.bytes, sha);
    return status;
}
