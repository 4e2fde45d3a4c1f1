/*
 * Segment format, chain, seals and keys, without a database.
 * With --write-seeds DIR it also writes the fuzzer's seed corpus.
 */
#include "storage/store_internal.h"
#include "tests/testlib.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

static store_header sample_header(uint64_t index, uint64_t plaintext_len)
{
    store_header h;
    memset(&h, 0, sizeof(h));
    h.flags = STORE_SEG_LOSS;
    for (int i = 0; i < 16; i++) {
        h.recording.b[i] = (uint8_t)(i + 1);
        h.key_id.b[i] = (uint8_t)(0xa0 + i);
    }
    h.index = index;
    store_nonce_for(index, h.nonce);
    h.start_us = 1700000000000000;
    h.end_us = 1700000001999000;
    h.packets = 1234;
    h.lost = 2;
    h.plaintext_len = plaintext_len;
    memset(h.sha256, 0x5a, 32);
    memset(h.chain, 0xc3, 32);
    return h;
}

static void expect_reject(const uint8_t *buf, size_t len, uint64_t file_len, const char *needle)
{
    store_header h;
    char why[200] = "";
    CHECK_EQ_INT(store_header_parse(buf, len, file_len, &h, why, sizeof(why)), CU_ERR_INVALID);
    CHECK_STR_CONTAINS(why, needle);
}

static void test_ids(void)
{
    store_id id, back;
    for (int i = 0; i < 16; i++)
        id.b[i] = (uint8_t)(i * 17);
    char text[37];
    store_id_format(&id, text);
    CHECK(strcmp(text, "00112233-4455-6677-8899-aabbccddeeff") == 0);
    CHECK(store_id_parse(text, &back) && store_id_equal(&id, &back));
    CHECK(store_id_parse("00112233-4455-6677-8899-AABBCCDDEEFF", &back));
    CHECK(!store_id_parse("00112233-4455-6677-8899-aabbccddeef", &back));
    CHECK(!store_id_parse("00112233x4455-6677-8899-aabbccddeeff", &back));
    CHECK(!store_id_parse("0011223g-4455-6677-8899-aabbccddeeff", &back));
}

static void test_header(void)
{
    store_header h = sample_header(7, 100), back;
    uint8_t buf[STORE_HEADER_LEN];
    memset(&back, 0, sizeof(back));
    char why[200];
    store_header_encode(&h, buf);
    CHECK(memcmp(buf, "CSEG", 4) == 0);
    CHECK(buf[4] == 0 && buf[5] == 1 && buf[6] == 0 && buf[7] == STORE_HEADER_LEN);
    CHECK(buf[28 + 7] == 7); /* index, big-endian */
    uint64_t file_len = STORE_HEADER_LEN + 100 + STORE_TAG_LEN;
    CHECK_EQ_INT(store_header_parse(buf, sizeof(buf), file_len, &back, why, sizeof(why)), CU_OK);
    CHECK(back.index == 7 && back.plaintext_len == 100 && back.flags == h.flags &&
          back.start_us == h.start_us && back.end_us == h.end_us && back.packets == 1234 &&
          back.lost == 2 && memcmp(back.sha256, h.sha256, 32) == 0 &&
          memcmp(back.chain, h.chain, 32) == 0 && store_id_equal(&back.recording, &h.recording) &&
          store_id_equal(&back.key_id, &h.key_id));
    uint8_t again[STORE_HEADER_LEN];
    store_header_encode(&back, again);
    CHECK(memcmp(again, buf, STORE_HEADER_LEN) == 0);

    uint8_t bad[STORE_HEADER_LEN];
    memcpy(bad, buf, sizeof(bad));
    bad[0] = 'X';
    expect_reject(bad, sizeof(bad), file_len, "bad magic");
    memcpy(bad, buf, sizeof(bad));
    bad[5] = 2;
    expect_reject(bad, sizeof(bad), file_len, "unsupported segment version 2");
    memcpy(bad, buf, sizeof(bad));
    bad[7] = 100;
    expect_reject(bad, sizeof(bad), file_len, "bad header length 100");
    memcpy(bad, buf, sizeof(bad));
    bad[11] |= 0x80;
    expect_reject(bad, sizeof(bad), file_len, "unknown flags");
    memcpy(bad, buf, sizeof(bad));
    bad[67] = 1;
    expect_reject(bad, sizeof(bad), file_len, "reserved field is not zero");
    memcpy(bad, buf, sizeof(bad));
    bad[63] ^= 1;
    expect_reject(bad, sizeof(bad), file_len, "nonce is not the one for index 7");
    memcpy(bad, buf, sizeof(bad));
    bad[28 + 7] = 8; /* index changed, nonce not */
    expect_reject(bad, sizeof(bad), file_len, "nonce is not the one for index 8");
    memcpy(bad, buf, sizeof(bad));
    memset(bad + 76, 0, 8); /* end time 0, before the start */
    expect_reject(bad, sizeof(bad), file_len, "end time before start time");
    memcpy(bad, buf, sizeof(bad));
    bad[166] = 1; /* the trailing reserved field */
    expect_reject(bad, sizeof(bad), file_len, "reserved field is not zero");
    memcpy(bad, buf, sizeof(bad));
    bad[92] = 1; /* plaintext length 2^56 + 100 */
    expect_reject(bad, sizeof(bad), 0, "exceeds");
    expect_reject(buf, sizeof(buf), file_len - 1, "header says");
    expect_reject(buf, sizeof(buf), file_len + 1, "header says");
    expect_reject(buf, 100, file_len, "header truncated (100 of 168 bytes)");
    expect_reject(buf, 3, file_len, "too short");
    store_header big = sample_header(1, STORE_SEGMENT_MAX + 1ull);
    store_header_encode(&big, bad);
    expect_reject(bad, sizeof(bad), 0, "exceeds");
}

static void test_chain(void)
{
    store_header h = sample_header(3, 10);
    uint8_t g[32], expect[32], c[32];
    uint8_t meta_sha[32];
    EVP_Digest("device_id=7\n", 12, meta_sha, NULL, EVP_sha256(), NULL);
    store_chain_genesis(&h.recording, meta_sha, g);
    uint8_t in[15 + 16 + 32];
    memcpy(in, "custos-chain-v1", 15);
    memcpy(in + 15, h.recording.b, 16);
    memcpy(in + 31, meta_sha, 32);
    EVP_Digest(in, sizeof(in), expect, NULL, EVP_sha256(), NULL);
    CHECK(memcmp(g, expect, 32) == 0);

    uint8_t buf[88];
    memcpy(buf, g, 32);
    memcpy(buf + 32, h.sha256, 32);
    for (int i = 0; i < 8; i++) {
        buf[64 + i] = (uint8_t)(h.index >> (56 - 8 * i));
        buf[72 + i] = (uint8_t)((uint64_t)h.start_us >> (56 - 8 * i));
        buf[80 + i] = (uint8_t)((uint64_t)h.end_us >> (56 - 8 * i));
    }
    EVP_Digest(buf, sizeof(buf), expect, NULL, EVP_sha256(), NULL);
    store_chain_next(g, &h, c);
    CHECK(memcmp(c, expect, 32) == 0);
    h.start_us++; /* times are part of the chain */
    store_chain_next(g, &h, buf);
    CHECK(memcmp(c, buf, 32) != 0);
}

static void test_seal(void)
{
    uint8_t dek[32], other[32], buf[STORE_SEAL_LEN];
    char why[200];
    memset(dek, 7, 32);
    memset(other, 8, 32);
    store_seal s = {.reason = STORE_SEAL_CLOSED, .count = 42, .opened_us = 1, .sealed_us = 2};
    memset(s.recording.b, 1, 16);
    memset(s.key_id.b, 2, 16);
    memset(s.head, 3, 32);
    store_seal_encode(&s, dek, buf);
    store_seal back;
    CHECK_EQ_INT(store_seal_parse(buf, sizeof(buf), &back, why, sizeof(why)), CU_OK);
    CHECK_EQ_INT(back.count, 42);
    CHECK(store_seal_mac_ok(&back, dek));
    CHECK(!store_seal_mac_ok(&back, other));
    back.head[5] ^= 1;
    CHECK(!store_seal_mac_ok(&back, dek));
    CHECK_EQ_INT(store_seal_parse(buf, sizeof(buf) - 1, &back, why, sizeof(why)), CU_ERR_INVALID);
    buf[7] = 9;
    CHECK_EQ_INT(store_seal_parse(buf, sizeof(buf), &back, why, sizeof(why)), CU_ERR_INVALID);
    CHECK_STR_CONTAINS(why, "unknown seal reason 9");
}

static void test_keys(void)
{
    char dir[] = "/tmp/custos-test-keys-XXXXXX";
    REQUIRE(mkdtemp(dir));
    keys_ring *k = NULL;
    cu_err err = {""};
    char path[256];
    struct stat st;
    snprintf(path, sizeof(path), "%s/keys", dir);
    CHECK_EQ_INT(keys_open(path, true, &k, &err), CU_OK);
    REQUIRE(k);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0700);
    snprintf(path, sizeof(path), "%s/keys/pending", dir);
    REQUIRE(mkdir(path, 0700) == 0);

    store_id rec, rec2;
    memset(rec.b, 0x11, 16);
    memset(rec2.b, 0x22, 16);
    store_dek dek, dek2;
    CHECK_EQ_INT(store_dek_new(k, &rec, &dek, &err), CU_OK);
    CHECK_EQ_INT(store_dek_new(k, &rec, &dek2, &err), CU_OK);
    CHECK(memcmp(dek.key, dek2.key, 32) != 0); /* fresh every time */
    snprintf(path, sizeof(path), "%s/keys/kek-%s.key", dir, dek.kek_id);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);

    uint8_t key[32];
    CHECK_EQ_INT(store_dek_unwrap(k, &rec, &dek.key_id, dek.kek_id, dek.wrapped, STORE_WRAPPED_LEN,
                                  key, &err),
                 CU_OK);
    CHECK(memcmp(key, dek.key, 32) == 0);
    /* Bound to its recording and key id: no swapping wrapped keys. */
    CHECK_EQ_INT(store_dek_unwrap(k, &rec2, &dek.key_id, dek.kek_id, dek.wrapped, STORE_WRAPPED_LEN,
                                  key, &err),
                 CU_ERR_INVALID);
    CHECK_EQ_INT(store_dek_unwrap(k, &rec, &dek2.key_id, dek.kek_id, dek.wrapped, STORE_WRAPPED_LEN,
                                  key, &err),
                 CU_ERR_INVALID);
    uint8_t tampered[STORE_WRAPPED_LEN];
    memcpy(tampered, dek.wrapped, sizeof(tampered));
    tampered[20] ^= 1;
    CHECK_EQ_INT(
        store_dek_unwrap(k, &rec, &dek.key_id, dek.kek_id, tampered, STORE_WRAPPED_LEN, key, &err),
        CU_ERR_INVALID);
    CHECK_EQ_INT(store_dek_unwrap(k, &rec, &dek.key_id, "0000000000000000", dek.wrapped,
                                  STORE_WRAPPED_LEN, key, &err),
                 CU_ERR_NOTFOUND);

    /* A new KEK: new keys use it, old wrapped keys still open, re-wrap moves them. */
    char new_id[STORE_KEK_ID_LEN + 1];
    CHECK_EQ_INT(keys_kek_add(k, new_id, &err), CU_OK);
    CHECK(strcmp(new_id, dek.kek_id) != 0);
    store_dek dek3;
    CHECK_EQ_INT(store_dek_new(k, &rec2, &dek3, &err), CU_OK);
    CHECK(strcmp(dek3.kek_id, new_id) == 0);
    CHECK_EQ_INT(store_dek_rewrap(k, &rec, &dek, &err), CU_OK);
    CHECK(strcmp(dek.kek_id, new_id) == 0);
    CHECK_EQ_INT(store_dek_unwrap(k, &rec, &dek.key_id, dek.kek_id, dek.wrapped, STORE_WRAPPED_LEN,
                                  key, &err),
                 CU_OK);
    CHECK(memcmp(key, dek.key, 32) == 0);

    /* Pending key files round-trip and carry no plain key. */
    CHECK_EQ_INT(store_pending_write(dir, &rec, &dek, &err), CU_OK);
    store_dek back;
    CHECK_EQ_INT(store_pending_read(dir, &rec, &back, &err), CU_OK);
    CHECK(store_id_equal(&back.key_id, &dek.key_id));
    CHECK(memcmp(back.wrapped, dek.wrapped, STORE_WRAPPED_LEN) == 0);
    cu_buf file;
    cu_buf_init(&file, 4096);
    char ptext[37];
    store_id_format(&rec, ptext);
    snprintf(path, sizeof(path), "%s/keys/pending/%s.dek", dir, ptext);
    CHECK_EQ_INT(store_read_file(path, 4096, &file, &err), CU_OK);
    CHECK(!memmem(file.data, file.len, dek.key, 32));
    cu_buf_free(&file);
    store_pending_remove(dir, &rec);
    CHECK_EQ_INT(store_pending_read(dir, &rec, &back, &err), CU_ERR_NOTFOUND);

    store_dek_wipe(&dek);
    store_dek_wipe(&dek2);
    store_dek_wipe(&dek3);
    keys_close(k);
    test_remove_tree(dir);
}

/* Seeds for fuzz/segment_header.c: valid and near-valid inputs. */
static void write_seed(const char *dir, const char *name, const void *data, size_t len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    REQUIRE(fwrite(data, 1, len, f) == len);
    fclose(f);
}

static void write_seeds(const char *dir)
{
    uint8_t file[STORE_HEADER_LEN + 32 + STORE_TAG_LEN] = {0};
    store_header h = sample_header(0, 32);
    store_header_encode(&h, file);
    memset(file + STORE_HEADER_LEN, 0xee, 32 + STORE_TAG_LEN);
    write_seed(dir, "segment-valid", file, sizeof(file));
    write_seed(dir, "segment-header-only", file, STORE_HEADER_LEN);
    write_seed(dir, "segment-truncated", file, 100);
    h = sample_header(123456789, 0);
    h.flags = STORE_SEG_GAP_START | STORE_SEG_LAST;
    store_header_encode(&h, file);
    memset(file + STORE_HEADER_LEN, 0x01, STORE_TAG_LEN);
    write_seed(dir, "segment-empty-last", file, STORE_HEADER_LEN + STORE_TAG_LEN);
    uint8_t seal[STORE_SEAL_LEN], dek[32];
    memset(dek, 9, sizeof(dek));
    store_seal s = {.reason = STORE_SEAL_INTERRUPTED, .count = 3};
    store_seal_encode(&s, dek, seal);
    write_seed(dir, "seal-valid", seal, sizeof(seal));
    printf("seeds written to %s\n", dir);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0) {
        write_seeds(argv[2]);
        return 0;
    }
    test_ids();
    test_header();
    test_chain();
    test_seal();
    test_keys();
    return test_finish("test_format");
}
