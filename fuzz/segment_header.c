/*
 * libFuzzer target: the segment header and seal parsers, which read files
 * from disk that an attacker may have written. Every input must either parse
 * into a header whose fields respect the documented bounds, or be rejected
 * with a reason; never crash, never read out of bounds.
 */
#include "storage/store_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    store_header h;
    store_seal s;
    char why[200];

    /* As verify reads a file: the whole file, its real length. */
    if (store_header_parse(data, size, size, &h, why, sizeof(why)) == CU_OK) {
        if (h.plaintext_len > STORE_SEGMENT_MAX || h.end_us < h.start_us ||
            size != STORE_HEADER_LEN + h.plaintext_len + STORE_TAG_LEN)
            abort();
        /* Re-encoding a parsed header gives back the same bytes. */
        uint8_t again[STORE_HEADER_LEN];
        memset(again, 0xaa, sizeof(again)); /* any byte encode forgets shows */
        store_header_encode(&h, again);
        if (memcmp(again, data, STORE_HEADER_LEN) != 0)
            abort();
    } else if (!why[0]) {
        abort(); /* a rejection always says why */
    }
    /* As reindex reads a header before it knows the length. */
    if (store_header_parse(data, size, 0, &h, why, sizeof(why)) == CU_OK && size < STORE_HEADER_LEN)
        abort();
    if (store_seal_parse(data, size, &s, why, sizeof(why)) == CU_OK &&
        (size != STORE_SEAL_LEN || s.reason < 1 || s.reason > 3))
        abort();
    return 0;
}
