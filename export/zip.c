/*
 * A ZIP archive written as a stream (APPNOTE 6.3.x): entries stored, never
 * compressed (video and packets do not compress, and a reader needs no
 * inflate), each followed by a data descriptor, so nothing is sought back
 * and a package goes straight to a socket or a pipe. ZIP64 is used for
 * every entry (the local header announces it; descriptor sizes are 8
 * bytes), so an entry or an archive may pass 4 GiB. The central directory
 * names each entry's CRC-32, sizes and offset, which is what readers
 * (unzip, Python, custos-verify) go by.
 */
#include "export.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#define ZIP_VERSION       45 /* ZIP64 */
#define ZIP_FLAG_DESC     0x0008
#define ZIP_FLAG_UTF8     0x0800
#define ZIP_NAME_MAX      512
#define ZIP_ENTRIES_MAX   100000
#define ZIP_DOS_DATE_1980 ((0 << 9) | (1 << 5) | 1)

static bool out(export_zip *z, const void *data, size_t len)
{
    if (!z->ok)
        return false;
    if (len && !z->write(z->ctx, data, len))
        z->ok = false;
    z->offset += len;
    return z->ok;
}

void export_zip_init(export_zip *z, int64_t mtime_us, export_write_fn write, void *ctx)
{
    memset(z, 0, sizeof(*z));
    z->write = write;
    z->ctx = ctx;
    z->ok = true;
    /* The DOS date and time of every entry: the package's time, UTC. */
    time_t t = (time_t)(mtime_us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    if (tm.tm_year >= 80) {
        z->dos_date = (uint16_t)(((tm.tm_year - 80) << 9) | ((tm.tm_mon + 1) << 5) | tm.tm_mday);
        z->dos_time = (uint16_t)((tm.tm_hour << 11) | (tm.tm_min << 5) | (tm.tm_sec / 2));
    } else {
        z->dos_date = ZIP_DOS_DATE_1980;
    }
}

bool export_zip_begin(export_zip *z, const char *name, bool hash)
{
    size_t n = strlen(name);
    if (!z->ok || z->open || n == 0 || n > ZIP_NAME_MAX || z->count >= ZIP_ENTRIES_MAX)
        return z->ok = false;
    if (z->count == z->cap) {
        z->cap = z->cap ? z->cap * 2 : 32;
        z->entries = cu_xrealloc(z->entries, z->cap * sizeof(*z->entries));
    }
    export_zip_entry *e = &z->entries[z->count++];
    memset(e, 0, sizeof(*e));
    e->name = cu_xstrdup(name);
    e->offset = z->offset;
    e->crc = (uint32_t)crc32(0L, Z_NULL, 0);
    z->hash = hash;
    if (hash)
        EVP_DigestInit_ex(z->sha = z->sha ? z->sha : EVP_MD_CTX_new(), EVP_sha256(), NULL);
    z->open = true;

    uint8_t h[30 + 20];
    cu_put_le32(h, 0x04034b50);
    cu_put_le16(h + 4, ZIP_VERSION);
    cu_put_le16(h + 6, ZIP_FLAG_DESC | ZIP_FLAG_UTF8);
    cu_put_le16(h + 8, 0); /* stored */
    cu_put_le16(h + 10, z->dos_time);
    cu_put_le16(h + 12, z->dos_date);
    cu_put_le32(h + 14, 0); /* CRC and sizes: in the descriptor */
    cu_put_le32(h + 18, 0xffffffff);
    cu_put_le32(h + 22, 0xffffffff);
    cu_put_le16(h + 26, (uint32_t)n);
    cu_put_le16(h + 28, 20);
    cu_put_le16(h + 30, 0x0001); /* ZIP64: sizes follow in the descriptor */
    cu_put_le16(h + 32, 16);
    cu_put_le64(h + 34, 0);
    cu_put_le64(h + 42, 0);
    return out(z, h, 30) && out(z, name, n) && out(z, h + 30, 20);
}

bool export_zip_data(export_zip *z, const void *data, size_t len)
{
    if (!z->open)
        return z->ok = false;
    export_zip_entry *e = &z->entries[z->count - 1];
    const uint8_t *p = data;
    for (size_t done = 0; done < len;) { /* (zlib's crc32 takes an unsigned int) */
        size_t step = len - done > (1u << 30) ? (1u << 30) : len - done;
        e->crc = (uint32_t)crc32(e->crc, p + done, (uInt)step);
        done += step;
    }
    if (z->hash)
        EVP_DigestUpdate(z->sha, data, len);
    e->size += len;
    return out(z, data, len);
}

bool export_zip_write(void *zip, const uint8_t *data, size_t len)
{
    return export_zip_data(zip, data, len);
}

bool export_zip_end(export_zip *z, uint8_t sha256[32])
{
    if (!z->open)
        return z->ok = false;
    z->open = false;
    export_zip_entry *e = &z->entries[z->count - 1];
    if (z->hash)
        EVP_DigestFinal_ex(z->sha, e->sha256, NULL);
    else if (sha256) /* (the caller hashed what it wrote) */
        memcpy(e->sha256, sha256, 32);
    if (sha256)
        memcpy(sha256, e->sha256, 32);
    uint8_t d[24];
    cu_put_le32(d, 0x08074b50);
    cu_put_le32(d + 4, e->crc);
    cu_put_le64(d + 8, e->size);
    cu_put_le64(d + 16, e->size);
    return out(z, d, sizeof(d));
}

bool export_zip_file(export_zip *z, const char *name, const void *data, size_t len,
                     uint8_t sha256[32])
{
    return export_zip_begin(z, name, true) && export_zip_data(z, data, len) &&
           export_zip_end(z, sha256);
}

bool export_zip_finish(export_zip *z)
{
    if (z->open)
        return z->ok = false;
    uint64_t cd_start = z->offset;
    for (size_t i = 0; i < z->count && z->ok; i++) {
        const export_zip_entry *e = &z->entries[i];
        size_t n = strlen(e->name);
        uint8_t h[46 + 28];
        cu_put_le32(h, 0x02014b50);
        cu_put_le16(h + 4, (3 << 8) | ZIP_VERSION); /* made by: Unix */
        cu_put_le16(h + 6, ZIP_VERSION);
        cu_put_le16(h + 8, ZIP_FLAG_DESC | ZIP_FLAG_UTF8);
        cu_put_le16(h + 10, 0);
        cu_put_le16(h + 12, z->dos_time);
        cu_put_le16(h + 14, z->dos_date);
        cu_put_le32(h + 16, e->crc);
        cu_put_le32(h + 20, 0xffffffff); /* compressed, uncompressed, offset: in ZIP64 */
        cu_put_le32(h + 24, 0xffffffff);
        cu_put_le16(h + 28, (uint32_t)n);
        cu_put_le16(h + 30, 28);
        cu_put_le16(h + 32, 0);                       /* comment */
        cu_put_le16(h + 34, 0);                       /* disk */
        cu_put_le16(h + 36, 0);                       /* internal attributes */
        cu_put_le32(h + 38, (uint32_t)0100444 << 16); /* a regular file, read-only */
        cu_put_le32(h + 42, 0xffffffff);
        cu_put_le16(h + 46, 0x0001);
        cu_put_le16(h + 48, 24);
        cu_put_le64(h + 50, e->size);
        cu_put_le64(h + 58, e->size);
        cu_put_le64(h + 66, e->offset);
        out(z, h, 46);
        out(z, e->name, n);
        out(z, h + 46, 28);
    }
    uint64_t cd_size = z->offset - cd_start, eocd64 = z->offset;
    uint8_t t[56 + 20 + 22];
    cu_put_le32(t, 0x06064b50); /* ZIP64 end of central directory */
    cu_put_le64(t + 4, 44);
    cu_put_le16(t + 12, (3 << 8) | ZIP_VERSION);
    cu_put_le16(t + 14, ZIP_VERSION);
    cu_put_le32(t + 16, 0);
    cu_put_le32(t + 20, 0);
    cu_put_le64(t + 24, z->count);
    cu_put_le64(t + 32, z->count);
    cu_put_le64(t + 40, cd_size);
    cu_put_le64(t + 48, cd_start);
    cu_put_le32(t + 56, 0x07064b50); /* its locator */
    cu_put_le32(t + 60, 0);
    cu_put_le64(t + 64, eocd64);
    cu_put_le32(t + 72, 1);
    cu_put_le32(t + 76, 0x06054b50); /* end of central directory: all in ZIP64 */
    cu_put_le16(t + 80, 0);
    cu_put_le16(t + 82, 0);
    cu_put_le16(t + 84, 0xffff);
    cu_put_le16(t + 86, 0xffff);
    cu_put_le32(t + 88, 0xffffffff);
    cu_put_le32(t + 92, 0xffffffff);
    cu_put_le16(t + 96, 0);
    return out(z, t, sizeof(t));
}

void export_zip_free(export_zip *z)
{
    for (size_t i = 0; i < z->count; i++)
        free(z->entries[i].name);
    free(z->entries);
    if (z->sha)
        EVP_MD_CTX_free(z->sha);
    memset(z, 0, sizeof(*z));
}
