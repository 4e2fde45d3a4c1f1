-- The evidence store's index (docs/segment-format.md). Everything here except
-- recording_keys can be rebuilt from the segment files (ingestctl reindex).

CREATE TABLE recordings (
    id            uuid        PRIMARY KEY,
    key_id        bytea       NOT NULL CHECK (length(key_id) = 16),
    state         text        NOT NULL DEFAULT 'open'
                  CHECK (state IN ('open', 'sealed', 'damaged', 'interrupted', 'erased')),
    opened_at     timestamptz NOT NULL,
    sealed_at     timestamptz,
    -- from the seal: segments 0 .. segment_count-1 and the chain head over them
    segment_count bigint      CHECK (segment_count >= 0),
    chain_head    bytea       CHECK (length(chain_head) = 32),
    erased_at     timestamptz
);

CREATE TABLE segments (
    recording_id  uuid        NOT NULL REFERENCES recordings (id),
    idx           bigint      NOT NULL CHECK (idx >= 0),
    start_us      bigint      NOT NULL,
    end_us        bigint      NOT NULL CHECK (end_us >= start_us),
    packets       integer     NOT NULL CHECK (packets >= 0),
    lost          integer     NOT NULL CHECK (lost >= 0),
    flags         integer     NOT NULL,
    plaintext_len bigint      NOT NULL CHECK (plaintext_len >= 0),
    file_len      bigint      NOT NULL,
    sha256        bytea       NOT NULL CHECK (length(sha256) = 32),
    chain         bytea       NOT NULL CHECK (length(chain) = 32),
    xxh3          bytea       NOT NULL CHECK (length(xxh3) = 16),
    stored_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (recording_id, idx)
);

-- The only copy of each recording's data key, wrapped by a key-encryption key.
-- Deleting a row is the cryptographic erasure of that recording.
CREATE TABLE recording_keys (
    recording_id uuid        PRIMARY KEY REFERENCES recordings (id),
    key_id       bytea       NOT NULL CHECK (length(key_id) = 16),
    kek_id       text        NOT NULL,
    wrapped      bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    rewrapped_at timestamptz
);
CREATE INDEX recording_keys_kek ON recording_keys (kek_id);

-- Per-recording figures, computed from the segments.
CREATE VIEW recording_stats AS
SELECT recording_id,
       count(*)                                  AS segments,
       sum(plaintext_len)                        AS bytes,
       sum(lost)                                 AS lost_packets,
       count(*) FILTER (WHERE flags & 3 <> 0)    AS gap_segments,
       min(start_us)                             AS first_start_us,
       max(end_us)                               AS last_end_us
FROM segments
GROUP BY recording_id;
