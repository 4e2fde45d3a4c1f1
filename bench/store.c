/*
 * bench/store --data-dir DIR --mb N: write N MB of segments through the
 * whole store path (SHA-256, chain, AES-256-GCM, fsync, rename, directory
 * fsync, PostgreSQL index) into DIR, leave them there, and print one JSON
 * object. floor_mb_per_s is SHA-256 + AES-256-GCM on one core, measured with
 * OpenSSL in the same run, so the ratio is comparable across machines.
 */
#include "storage/store.h"

#include <getopt.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static double seconds_since(int64_t t0)
{
    return (double)(cu_mono_ns() - t0) / 1e9;
}

/* One core: hash then encrypt 2 MB buffers for about a second. */
static double measure_floor(size_t seg_bytes)
{
    uint8_t *buf = cu_xmalloc(seg_bytes), *out = cu_xmalloc(seg_bytes + 16);
    uint8_t key[32] = {1}, iv[12] = {2}, md[32], tag[16];
    if (RAND_bytes(buf, (int)seg_bytes) != 1)
        abort();
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    uint64_t bytes = 0;
    int64_t t0 = cu_mono_ns();
    while (seconds_since(t0) < 1.0) {
        int n = 0;
        EVP_Digest(buf, seg_bytes, md, NULL, EVP_sha256(), NULL);
        if (EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, iv) != 1 ||
            EVP_EncryptUpdate(c, NULL, &n, md, 32) != 1 ||
            EVP_EncryptUpdate(c, out, &n, buf, (int)seg_bytes) != 1 ||
            EVP_EncryptFinal_ex(c, out + n, &n) != 1 ||
            EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
            abort();
        bytes += seg_bytes;
    }
    double mbps = (double)bytes / 1e6 / seconds_since(t0);
    EVP_CIPHER_CTX_free(c);
    free(buf);
    free(out);
    return mbps;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"data-dir", required_argument, NULL, 'd'},
        {"mb", required_argument, NULL, 'm'},
        {"segment-mb", required_argument, NULL, 's'},
        {"recordings", required_argument, NULL, 'r'},
        {"workers", required_argument, NULL, 'w'},
        {"syncers", required_argument, NULL, 'y'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *data_dir = NULL;
    int64_t mb = 0, seg_mb = 2, recordings = 8, workers = 0, syncers = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "d:m:s:r:w:y:h", options, NULL)) != -1) {
        int64_t *target = NULL;
        switch (opt) {
        case 'd': data_dir = optarg; continue;
        case 'm': target = &mb; break;
        case 's': target = &seg_mb; break;
        case 'r': target = &recordings; break;
        case 'w': target = &workers; break;
        case 'y': target = &syncers; break;
        default:
            fprintf(stderr, "usage: bench/store --data-dir DIR --mb N [--segment-mb 2] "
                            "[--recordings 8] [--workers 2xCPUS] [--syncers 4]\n");
            return opt == 'h' ? 0 : 2;
        }
        if (!cu_parse_int64(optarg, target) || *target < 0 || *target > 1000000) {
            fprintf(stderr, "bench/store: bad number '%s'\n", optarg);
            return 2;
        }
    }
    if (!data_dir || mb <= 0 || seg_mb <= 0 || seg_mb > 64 || recordings <= 0) {
        fprintf(stderr, "bench/store: --data-dir and --mb are required (segments 1..64 MB)\n");
        return 2;
    }

    cu_config cfg;
    cu_err err;
    cu_datadir *dd = NULL;
    db_service *db = NULL;
    store *s = NULL;
    keys_ring *keys = NULL;
    int status = 1;
    atomic_store(&cu_log_threshold, CU_LOG_WARN);
    if (cu_config_load(&cfg, NULL, data_dir, NULL, 0, &err) != CU_OK ||
        cu_datadir_open(cfg.data_dir, "bench/store", &dd, &err) != CU_OK ||
        db_service_start(&cfg, cu_datadir_path(dd), DB_OWN, "custos-bench", &db, &err) != CU_OK) {
        fprintf(stderr, "bench/store: %s\n", err.msg);
        goto out;
    }
    size_t seg_bytes = (size_t)seg_mb * 1000 * 1000;
    double floor_mbps = measure_floor(seg_bytes);

    char keys_path[PATH_MAX];
    snprintf(keys_path, sizeof(keys_path), "%s/keys", cu_datadir_path(dd));
    if (keys_open(keys_path, true, &keys, &err) != CU_OK) {
        fprintf(stderr, "bench/store: %s\n", err.msg);
        goto out;
    }
    store_opts o = {.data_dir = cu_datadir_path(dd),
                    .dsn = db_service_dsn(db),
                    .keys = keys,
                    .workers = (int)workers,
                    .syncers = (int)syncers};
    if (store_open(&o, &s, &err) != CU_OK) {
        fprintf(stderr, "bench/store: %s\n", err.msg);
        goto out;
    }
    store_recording **recs = cu_xcalloc((size_t)recordings, sizeof(*recs));
    for (int64_t i = 0; i < recordings; i++)
        if (store_recording_open(s, NULL, &recs[i], NULL, &err) != CU_OK) {
            fprintf(stderr, "bench/store: %s\n", err.msg);
            goto out;
        }
    uint8_t *template = cu_xmalloc(seg_bytes);
    if (RAND_bytes(template, (int)seg_bytes) != 1)
        abort();
    int64_t nsegs = (mb * 1000 * 1000 + (int64_t)seg_bytes - 1) / (int64_t)seg_bytes;

    int64_t t0 = cu_mono_ns();
    for (int64_t i = 0; i < nsegs; i++) {
        template[i % (int64_t)seg_bytes] ^= (uint8_t)(i | 1); /* no two segments alike */
        cu_chunk *data = NULL, *tail = NULL;
        if (!cu_chunk_append(&data, &tail, template, seg_bytes))
            abort();
        store_segment_meta m = {
            .start_us = i * 2000000, .end_us = i * 2000000 + 1999999, .packets = 1700};
        if (store_segment_submit(recs[i % recordings], data, seg_bytes, &m, true, NULL) != CU_OK) {
            fprintf(stderr, "bench/store: submit failed\n");
            goto out;
        }
    }
    for (int64_t i = 0; i < recordings; i++)
        store_recording_close(recs[i]);
    store_flush(s);
    double acked_s = seconds_since(t0);
    bool indexed = store_index_wait(s, 120000);
    double total_s = seconds_since(t0);
    free(template);
    free(recs);

    store_stats st;
    store_stats_get(s, &st);
    double written_mb = (double)st.bytes_acked / 1e6;
    printf("{\"mb\": %.1f, \"segment_mb\": %lld, \"segments\": %llu, \"recordings\": %lld, "
           "\"seconds\": %.3f, \"mb_per_s\": %.1f, \"ack_mb_per_s\": %.1f, "
           "\"fsync_ms_p50\": %.2f, \"fsync_ms_p99\": %.2f, \"fsyncs\": %llu, "
           "\"floor_mb_per_s\": %.1f, \"ratio\": %.2f, \"index_rows\": %llu, \"indexed\": %s, "
           "\"failed\": %llu}\n",
           written_mb, (long long)seg_mb, (unsigned long long)st.segments_acked,
           (long long)recordings, total_s, written_mb / total_s, written_mb / acked_s,
           st.fsync_ms_p50, st.fsync_ms_p99, (unsigned long long)st.fsyncs, floor_mbps,
           written_mb / total_s / floor_mbps, (unsigned long long)st.index_rows,
           indexed ? "true" : "false", (unsigned long long)st.segments_failed);
    status = st.segments_failed == 0 && indexed ? 0 : 1;
out:
    store_close(s, 10000);
    keys_close(keys);
    db_service_stop(db);
    cu_datadir_close(dd);
    cu_config_free(&cfg);
    return status;
}
