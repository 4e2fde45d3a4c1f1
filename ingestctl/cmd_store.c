/* ingestctl commands on the database and the evidence store. */
#include "ingestctl.h"
#include "pipeline/pipeline.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cmd_db_status(ctl_env *env, int argc, char **argv)
{
    (void)argv;
    cu_err err;
    if (argc != 1) {
        fprintf(stderr, "usage: ingestctl db status\n");
        return 2;
    }
    int version = db_schema_version(db_service_conn(env->db), &err);
    if (version < 0) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        return 1;
    }
    const db_migration *newest = &db_schema_migrations[db_schema_migrations_count - 1];
    printf("installation  %s\n", db_service_instance_id(env->db));
    if (env->cfg.db_dsn[0])
        printf("database      external (db.dsn)\n");
    else if (env->mode == DB_ATTACH)
        printf("database      embedded, run by the ingestd that holds the data dir\n");
    else
        printf("database      embedded, started for this command\n");
    printf("schema        version %d of %d (%s)\n", version, newest->version,
           version == newest->version ? "up to date" : "behind");
    return 0;
}

int cmd_db_migrate(ctl_env *env, int argc, char **argv)
{
    (void)argv;
    cu_err err;
    int applied = 0;
    if (argc != 1) {
        fprintf(stderr, "usage: ingestctl db migrate\n");
        return 2;
    }
    /* db_service_start already migrated when it could; running it again, as
     * the owner, reports the state. */
    if (db_service_migrate(env->db, &applied, &err) != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        return 1;
    }
    printf("schema at version %d (%s)\n",
           db_schema_migrations[db_schema_migrations_count - 1].version,
           db_schema_migrations[db_schema_migrations_count - 1].name);
    return 0;
}

int cmd_verify(ctl_env *env, int argc, char **argv)
{
    static const struct option options[] = {
        {"recording", required_argument, NULL, 'r'},
        {"quick", no_argument, NULL, 'q'},
        {NULL, 0, NULL, 0},
    };
    store_id one;
    store_verify_opts o = {.out = stdout,
                           .progress = isatty(STDERR_FILENO) != 0,
                           .writer_running = env->mode == DB_ATTACH};
    store_verify_report rep;
    cu_err err;
    int opt;
    optind = 0; /* a fresh scan of the command's own arguments */
    while ((opt = getopt_long(argc, argv, "+r:q", options, NULL)) != -1) {
        switch (opt) {
        case 'r':
            if (!store_id_parse(optarg, &one)) {
                fprintf(stderr, "ingestctl: '%s' is not a recording id\n", optarg);
                return 2;
            }
            o.recording = &one;
            break;
        case 'q': o.quick = true; break;
        default: fprintf(stderr, "usage: ingestctl verify [--recording ID] [--quick]\n"); return 2;
        }
    }
    if (!o.quick && !(o.keys = ctl_keys(env)))
        return 1;
    if (store_verify(ctl_data_dir(env), db_service_conn(env->db), &o, &rep, &err) != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        return 1;
    }
    printf("verified %llu recordings, %llu segments, %llu problems\n",
           (unsigned long long)rep.recordings, (unsigned long long)rep.segments,
           (unsigned long long)rep.problems);
    return rep.problems ? 1 : 0;
}

int cmd_reindex(ctl_env *env, int argc, char **argv)
{
    (void)argv;
    store_reindex_report rep;
    cu_err err;
    if (argc != 1) {
        fprintf(stderr, "usage: ingestctl reindex\n");
        return 2;
    }
    if (store_reindex(ctl_data_dir(env), db_service_conn(env->db), &rep, &err) != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        return 1;
    }
    printf("reindexed %llu recordings, %llu segments; %llu keys imported",
           (unsigned long long)rep.recordings, (unsigned long long)rep.segments,
           (unsigned long long)rep.keys_imported);
    if (rep.rows_without_file)
        printf("; %llu index rows have no file (run ingestctl verify)",
               (unsigned long long)rep.rows_without_file);
    printf("\n");
    return 0;
}

int cmd_keys_rotate(ctl_env *env, int argc, char **argv)
{
    (void)argv;
    store_rotate_report rep;
    cu_err err;
    if (argc != 1) {
        fprintf(stderr, "usage: ingestctl keys rotate\n");
        return 2;
    }
    keys_ring *keys = ctl_keys(env);
    if (!keys)
        return 1;
    if (store_keys_rotate(ctl_data_dir(env), db_service_conn(env->db), keys, &rep, &err) != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        return 1;
    }
    printf("key-encryption key %s is active; %llu data keys re-wrapped (%llu pending), %llu "
           "device secrets\n",
           rep.new_kek, (unsigned long long)rep.rewrapped,
           (unsigned long long)rep.pending_rewrapped, (unsigned long long)rep.devices_rewrapped);
    return 0;
}

int cmd_keys_list(ctl_env *env, int argc, char **argv)
{
    (void)argv;
    char(*ids)[KEYS_KEK_ID_LEN + 1] = NULL, active[KEYS_KEK_ID_LEN + 1] = "";
    size_t n = 0;
    cu_err err;
    int status = 1;
    if (argc != 1) {
        fprintf(stderr, "usage: ingestctl keys list\n");
        return 2;
    }
    keys_ring *keys = ctl_keys(env);
    if (!keys)
        return 1;
    if (keys_active(keys, active, &err) != CU_OK || keys_kek_list(keys, &ids, &n, &err) != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        goto out;
    }
    printf("%-18s %10s %8s %15s %13s\n", "kek", "data keys", "pending", "device secrets",
           "user secrets");
    for (size_t i = 0; i < n; i++) {
        store_kek_usage u;
        if (store_kek_usage_get(ctl_data_dir(env), db_service_conn(env->db), ids[i], &u, &err) !=
            CU_OK) {
            fprintf(stderr, "ingestctl: %s\n", err.msg);
            goto out;
        }
        printf("%-18s %10llu %8llu %15llu %13llu%s\n", ids[i], (unsigned long long)u.data_keys,
               (unsigned long long)u.pending_keys, (unsigned long long)u.device_secrets,
               (unsigned long long)u.user_secrets, strcmp(ids[i], active) == 0 ? "  (active)" : "");
    }
    status = 0;
out:
    free(ids);
    return status;
}

int cmd_keys_retire(ctl_env *env, int argc, char **argv)
{
    cu_err err;
    if (argc != 2) {
        fprintf(stderr, "usage: ingestctl keys retire KEKID\n");
        return 2;
    }
    keys_ring *keys = ctl_keys(env);
    if (!keys)
        return 1;
    if (store_kek_retire(ctl_data_dir(env), db_service_conn(env->db), keys, argv[1], &err) != CU_OK)
        return ctl_audited(env, "keys.retire", argv[1], &err);
    if (ctl_audited(env, "keys.retire", argv[1], NULL))
        return 1;
    printf("key-encryption key %s destroyed: nothing it wrapped can be unwrapped again, backups "
           "included\n",
           argv[1]);
    return 0;
}

/* What a recording holds, packet by packet: for operators and tests. */
int cmd_packets(ctl_env *env, int argc, char **argv)
{
    static const struct option options[] = {
        {"recording", required_argument, NULL, 'r'},
        {"summary", no_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    store_id id;
    bool have_id = false, summary = false;
    int opt;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "+r:s", options, NULL)) != -1) {
        if (opt == 'r' && store_id_parse(optarg, &id))
            have_id = true;
        else if (opt == 's')
            summary = true;
        else
            have_id = false, opt = '?';
        if (opt == '?')
            break;
    }
    if (!have_id || optind < argc) {
        fprintf(stderr, "usage: ingestctl packets --recording ID [--summary]\n");
        return 2;
    }
    cu_err err;
    cu_buf plain;
    keys_ring *keys = ctl_keys(env);
    if (!keys)
        return 1;
    cu_buf_init(&plain, STORE_SEGMENT_MAX);
    int status = 0;
    for (uint64_t idx = 0;; idx++) {
        cu_rc rc = store_segment_read(ctl_data_dir(env), db_service_conn(env->db), keys, &id, idx,
                                      &plain, &err);
        if (rc == CU_ERR_NOTFOUND || (rc == CU_ERR_INVALID && strstr(err.msg, "No such file")))
            break;
        if (rc) {
            fprintf(stderr, "ingestctl: segment %llu: %s\n", (unsigned long long)idx, err.msg);
            status = 1;
            break;
        }
        pipe_payload_reader r;
        if (!pipe_payload_open(&r, (const uint8_t *)plain.data, plain.len)) {
            printf("segment %llu: not an RTP payload\n", (unsigned long long)idx);
            continue;
        }
        pipe_record rec;
        uint32_t packets = 0, lost = 0, first_ts = 0;
        bool opening_au = true, key_start = false;
        int more;
        while ((more = pipe_payload_next(&r, &rec)) == 1) {
            pipe_rtp p;
            if (pipe_rtp_parse(rec.pkt, rec.len, &p) != PIPE_RTP_OK)
                continue;
            int key = r.codec == PIPE_CODEC_H264   ? pipe_h264_keyframe(p.payload, p.payload_len)
                      : r.codec == PIPE_CODEC_H265 ? pipe_h265_keyframe(p.payload, p.payload_len)
                                                   : 0;
            /* The access unit that opens the segment: is it a keyframe's? */
            if (packets == 0)
                first_ts = p.timestamp;
            else if (p.timestamp != first_ts)
                opening_au = false;
            if (opening_au && key == 1)
                key_start = true;
            if (!summary)
                printf("segment %llu seq %u ts %u marker %d lost_before %u key %d\n",
                       (unsigned long long)idx, p.seq, p.timestamp, p.marker, rec.lost_before,
                       key == 1);
            packets++;
            lost += rec.lost_before;
        }
        printf("segment %llu summary packets %u lost %u codec %s starts_with_keyframe %s%s\n",
               (unsigned long long)idx, packets, lost, pipe_codec_name(r.codec),
               key_start ? "yes" : "no", more < 0 ? " TRUNCATED" : "");
    }
    cu_buf_free(&plain);
    return status;
}
