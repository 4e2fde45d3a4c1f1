-- Evidence integrity (docs/integrity.md): the application role's rights,
-- evidence history that only the owner could rewrite, seals anchored in the
-- audit chain, continuation recordings, live counts of open recordings, and
-- erasure as one audited function.
--
-- Runs as the owner role (db.owner_dsn; custos_owner in the embedded
-- cluster). Every right the application has is granted to the group role
-- custos_app, never to a login role; the login roles ingestd and ingestctl
-- use at run time are members of it and own nothing.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'custos_app') THEN
        RAISE EXCEPTION 'the role custos_app does not exist; create it (NOLOGIN) and make the '
                        'application''s login role a member before migrating: docs/database.md, '
                        '"Roles"' USING ERRCODE = 'undefined_object';
    END IF;
END
$$;

-- ------------------------------------------------------------ recordings

-- A recording that goes on from another after a failed write.
ALTER TABLE recordings ADD COLUMN continues uuid REFERENCES recordings (id);
CREATE INDEX recordings_continues ON recordings (continues) WHERE continues IS NOT NULL;

-- What has been acknowledged and indexed so far: counts every listing
-- shows while a recording is open (the seal's count is the final word).
ALTER TABLE recordings
    ADD COLUMN acked_segments bigint NOT NULL DEFAULT 0 CHECK (acked_segments >= 0),
    ADD COLUMN acked_bytes    bigint NOT NULL DEFAULT 0 CHECK (acked_bytes >= 0),
    ADD COLUMN first_start_us bigint,
    ADD COLUMN last_end_us    bigint;
UPDATE recordings r SET acked_segments = s.segments, acked_bytes = s.bytes,
                        first_start_us = s.first_start_us, last_end_us = s.last_end_us
FROM recording_stats s WHERE s.recording_id = r.id;

-- One UPDATE per INSERT statement on segments, from the rows it really
-- inserted (ON CONFLICT DO NOTHING leaves replays out).
-- (an open recording's counts move by what was added; a closed one, which
-- takes rows only from a reindex, is counted again from its rows)
CREATE FUNCTION segments_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE recordings r
    SET acked_segments = r.acked_segments + n.segments,
        acked_bytes = r.acked_bytes + n.bytes,
        first_start_us = least(r.first_start_us, n.first_start_us),
        last_end_us = greatest(r.last_end_us, n.last_end_us)
    FROM (SELECT recording_id, count(*) AS segments, sum(plaintext_len) AS bytes,
                 min(start_us) AS first_start_us, max(end_us) AS last_end_us
          FROM inserted GROUP BY recording_id) n
    WHERE r.id = n.recording_id AND r.state = 'open';
    UPDATE recordings r
    SET (acked_segments, acked_bytes, first_start_us, last_end_us) =
        (SELECT count(*), coalesce(sum(g.plaintext_len), 0), min(g.start_us), max(g.end_us)
         FROM segments g WHERE g.recording_id = r.id)
    WHERE r.id IN (SELECT recording_id FROM inserted) AND r.state <> 'open';
    RETURN NULL;
END
$$;
CREATE TRIGGER segments_count AFTER INSERT ON segments REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION segments_count();

-- A closed recording is history: its identity, key, seal and owner never
-- change again, and it becomes 'erased' only inside recording_erase().
CREATE FUNCTION recordings_history() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_segments bigint;
    v_bytes    bigint;
    v_first    bigint;
    v_last     bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'recordings are evidence: a row is never deleted (erase it)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.id <> OLD.id OR NEW.key_id <> OLD.key_id OR NEW.opened_at <> OLD.opened_at
       OR NEW.continues IS DISTINCT FROM OLD.continues AND OLD.continues IS NOT NULL
       OR NEW.device_id IS DISTINCT FROM OLD.device_id AND OLD.device_id IS NOT NULL
       OR NEW.officer_id IS DISTINCT FROM OLD.officer_id AND OLD.officer_id IS NOT NULL THEN
        RAISE EXCEPTION 'recording %: its identity, key, device and officer never change', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.state <> 'open' AND (NEW.sealed_at IS DISTINCT FROM OLD.sealed_at
                                OR NEW.segment_count IS DISTINCT FROM OLD.segment_count
                                OR NEW.chain_head IS DISTINCT FROM OLD.chain_head) THEN
        RAISE EXCEPTION 'recording % is sealed: its seal never changes', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.state = 'erased' AND NEW IS DISTINCT FROM OLD THEN
        RAISE EXCEPTION 'recording % is erased: its row never changes again', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.state IS DISTINCT FROM OLD.state AND OLD.state <> 'open' AND NEW.state <> 'erased' THEN
        RAISE EXCEPTION 'recording % is %: its state never changes but to erased', OLD.id,
            OLD.state USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- What a closed recording shows is what its segment rows hold: the
    -- counts move only with them (new rows, or a recount after reindex).
    IF OLD.state <> 'open' AND OLD.state <> 'erased'
       AND ROW(NEW.acked_segments, NEW.acked_bytes, NEW.first_start_us, NEW.last_end_us)
           IS DISTINCT FROM ROW(OLD.acked_segments, OLD.acked_bytes, OLD.first_start_us,
                                OLD.last_end_us) THEN
        SELECT count(*), coalesce(sum(g.plaintext_len), 0), min(g.start_us), max(g.end_us)
        INTO v_segments, v_bytes, v_first, v_last FROM segments g WHERE g.recording_id = OLD.id;
        IF ROW(NEW.acked_segments, NEW.acked_bytes, NEW.first_start_us, NEW.last_end_us)
           IS DISTINCT FROM ROW(v_segments, v_bytes, v_first, v_last) THEN
            RAISE EXCEPTION 'recording % is sealed: its counts are those of its segment rows',
                OLD.id USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    -- Only recording_erase(), which runs as the table's owner, erases.
    IF (NEW.state = 'erased' OR NEW.erased_at IS DISTINCT FROM OLD.erased_at)
       AND current_user <> (SELECT pg_get_userbyid(c.relowner) FROM pg_class c
                            WHERE c.oid = TG_RELID) THEN
        RAISE EXCEPTION 'recording %: only recording_erase() erases', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER recordings_history BEFORE UPDATE OR DELETE ON recordings
    FOR EACH ROW EXECUTE FUNCTION recordings_history();

-- Segment rows are never changed or removed; a closed recording takes only
-- rows its seal covers (reindex restoring them), an erased one none.
CREATE FUNCTION segments_history() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_state text;
    v_count bigint;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        RAISE EXCEPTION 'segment rows are evidence: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT state, segment_count INTO v_state, v_count FROM recordings WHERE id = NEW.recording_id;
    IF v_state = 'erased' OR (v_state <> 'open' AND NEW.idx >= coalesce(v_count, 0)) THEN
        RAISE EXCEPTION 'recording % is %: segment % is not one its seal covers',
            NEW.recording_id, v_state, NEW.idx USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER segments_history BEFORE INSERT OR UPDATE OR DELETE ON segments
    FOR EACH ROW EXECUTE FUNCTION segments_history();
CREATE FUNCTION history_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is evidence: TRUNCATE refused', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER history_no_truncate BEFORE TRUNCATE ON segments
    FOR EACH STATEMENT EXECUTE FUNCTION history_no_truncate();
CREATE TRIGGER history_no_truncate BEFORE TRUNCATE ON recordings
    FOR EACH STATEMENT EXECUTE FUNCTION history_no_truncate();

-- What a page of recordings shows: for a closed recording the seal's
-- count, for an open one what has been acknowledged so far, and its bytes
-- and duration (both growing while it records).
DROP FUNCTION recordings_page(bigint, timestamptz, integer, integer);
CREATE FUNCTION recordings_page(p_user bigint, p_at timestamptz, p_offset integer,
                                p_limit integer)
RETURNS TABLE (id uuid, device text, officer text, department text, opened_at timestamptz,
               sealed_at timestamptz, state text, segments bigint, bytes bigint,
               duration_ms bigint)
LANGUAGE sql STABLE AS $$
    SELECT r.id, dv.serial, o.username, od.name, r.opened_at, r.sealed_at, r.state,
           coalesce(r.segment_count, r.acked_segments), r.acked_bytes,
           coalesce((r.last_end_us - r.first_start_us) / 1000, 0)
    -- OFFSET 0: the scope is computed once, not once per branch that reads it
    FROM (SELECT v.* FROM (SELECT * FROM reader_scope(p_user, p_at) OFFSET 0) s
          CROSS JOIN LATERAL (
              (SELECT a.* FROM recordings a WHERE s.everything
               ORDER BY a.opened_at DESC, a.id DESC LIMIT p_offset + p_limit)
              UNION ALL
              (SELECT b.* FROM unnest(s.officers) AS u(officer_id)
               CROSS JOIN LATERAL (SELECT * FROM recordings rr WHERE rr.officer_id = u.officer_id
                                   ORDER BY rr.opened_at DESC, rr.id DESC
                                   LIMIT p_offset + p_limit) b
               WHERE cardinality(s.officers) <= 64)
              UNION ALL
              (SELECT c.* FROM recordings c
               WHERE cardinality(s.officers) > 64 AND c.officer_id = ANY (s.officers)
               ORDER BY c.opened_at DESC, c.id DESC LIMIT p_offset + p_limit)) v
          ORDER BY v.opened_at DESC, v.id DESC LIMIT p_limit OFFSET p_offset) r
    LEFT JOIN devices dv ON dv.id = r.device_id
    LEFT JOIN users o ON o.id = r.officer_id
    LEFT JOIN departments od ON od.id = o.department_id
$$;

-- An erased recording's key never comes back (a reindex or catch-up that
-- read a pending key file before the erasure committed).
CREATE FUNCTION recording_keys_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT state FROM recordings WHERE id = NEW.recording_id) = 'erased' THEN
        RAISE EXCEPTION 'recording % is erased: its data key is destroyed for good',
            NEW.recording_id USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER recording_keys_history BEFORE INSERT ON recording_keys
    FOR EACH ROW EXECUTE FUNCTION recording_keys_history();

-- ----------------------------------------------------------------- alerts

ALTER TABLE security_alerts DROP CONSTRAINT security_alerts_kind_check;
ALTER TABLE security_alerts ADD CONSTRAINT security_alerts_kind_check
    CHECK (kind IN ('failure_burst', 'locked_account_attempt', 'privileged_new_source',
                    'recording_damaged'));

-- ------------------------------------------------------------------ audit

-- Appends run as the owner: the application role cannot write audit_log
-- itself, only through this function. A fixed search_path, pg_temp last,
-- so that nothing the caller creates can stand in for what it calls.
ALTER FUNCTION audit_append(text[], text[], text[], text[], text[])
    SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;

-- Seal entries are looked up by recording (ingestctl verify).
CREATE INDEX audit_log_seals ON audit_log (object text_pattern_ops)
    WHERE action IN ('recording.seal', 'recording.erase');

-- The seal of a recording, as the index learns it: the row becomes closed
-- (once: a closed row is history) and, in the same transaction, the seal is
-- anchored in the audit chain (recording.seal, by system) and a damaged
-- recording raises an alert. Returns whether this call closed the row.
CREATE FUNCTION recording_seal(p_id uuid, p_key_id bytea, p_opened_us bigint, p_device bigint,
                               p_state text, p_sealed_us bigint, p_count bigint, p_head bytea,
                               p_continues uuid)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_at timestamptz := 'epoch'::timestamptz + p_opened_us * interval '1 microsecond';
    v_closed boolean;
BEGIN
    INSERT INTO recordings AS r (id, key_id, opened_at, device_id, officer_id, continues, state,
                                 sealed_at, segment_count, chain_head)
    VALUES (p_id, p_key_id, v_at, p_device,
            (SELECT a.user_id FROM device_assignments a
             WHERE a.device_id = p_device AND a.assigned_from <= v_at
               AND (a.assigned_until IS NULL OR a.assigned_until > v_at)
             ORDER BY a.assigned_from DESC LIMIT 1),
            (SELECT c.id FROM recordings c WHERE c.id = p_continues), p_state,
            'epoch'::timestamptz + p_sealed_us * interval '1 microsecond', p_count, p_head)
    ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, sealed_at = EXCLUDED.sealed_at,
        segment_count = EXCLUDED.segment_count, chain_head = EXCLUDED.chain_head,
        device_id = coalesce(r.device_id, EXCLUDED.device_id),
        officer_id = coalesce(r.officer_id, EXCLUDED.officer_id),
        continues = coalesce(r.continues, EXCLUDED.continues)
    WHERE r.state = 'open'
    RETURNING true INTO v_closed;
    IF v_closed IS NULL THEN
        RETURN false;
    END IF;
    PERFORM audit_append(ARRAY['system'], ARRAY['recording.seal'],
                         ARRAY['recording:' || p_id || ' state=' || p_state || ' segments='
                               || p_count || ' head=' || encode(p_head, 'hex')],
                         ARRAY['ok'], ARRAY['local']);
    IF p_state = 'damaged' THEN
        INSERT INTO security_alerts (kind, username, source, detail)
        VALUES ('recording_damaged', '', 'local',
                'recording ' || p_id || ' was sealed at ' || p_count
                || ' segments after a failed write; its stream goes on in a continuation');
    END IF;
    RETURN true;
END
$$;

-- Cryptographic erasure in the database (docs/integrity.md, "Erasure"): the
-- wrapped data key is destroyed, the row marked erased (its segment rows
-- and seal stay as the record of what existed), and the deletion record is
-- appended to the audit chain, all in one transaction. The caller removes
-- the files afterwards. Runs as the owner: the application role has no
-- DELETE on recording_keys and cannot mark a recording erased itself.
-- Refused for an open recording. Erasing an erased recording changes
-- nothing and returns 0; otherwise the deletion record's seq.
CREATE FUNCTION recording_erase(p_id uuid, p_actor text, p_reason text, p_source text)
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_rec recordings%ROWTYPE;
    v_seq bigint;
BEGIN
    SELECT * INTO v_rec FROM recordings WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'recording % is not in the index', p_id USING ERRCODE = 'no_data_found';
    END IF;
    IF v_rec.state = 'erased' THEN
        RETURN 0;
    END IF;
    IF v_rec.state = 'open' THEN
        RAISE EXCEPTION 'recording % is still open', p_id USING ERRCODE = 'object_in_use';
    END IF;
    DELETE FROM recording_keys WHERE recording_id = p_id;
    UPDATE recordings SET state = 'erased', erased_at = now() WHERE id = p_id;
    v_seq := audit_append(ARRAY[p_actor], ARRAY['recording.erase'],
                          ARRAY['recording:' || p_id || ' state=' || v_rec.state || ' segments='
                                || coalesce(v_rec.segment_count, 0) || ' head='
                                || coalesce(encode(v_rec.chain_head, 'hex'), '') || ' reason='
                                || p_reason],
                          ARRAY['ok'], ARRAY[p_source]);
    RETURN v_seq;
END
$$;

-- ----------------------------------------------------------------- rights

REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO custos_app;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;

-- Ordinary tables: what the application does with them.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO custos_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO custos_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO custos_app;

-- Evidence and identity: read, and add through the rules above.
REVOKE INSERT, UPDATE, DELETE ON instance, schema_version FROM custos_app;
REVOKE INSERT, UPDATE, DELETE ON audit_log FROM custos_app;
REVOKE UPDATE, DELETE ON segments FROM custos_app;
REVOKE UPDATE, DELETE ON recordings FROM custos_app;
GRANT UPDATE (state, sealed_at, segment_count, chain_head, device_id, officer_id, continues,
              acked_segments, acked_bytes, first_start_us, last_end_us) ON recordings TO custos_app;
REVOKE UPDATE, DELETE ON recording_keys FROM custos_app;
GRANT UPDATE (kek_id, wrapped, rewrapped_at) ON recording_keys TO custos_app;
-- Histories of their own: every version of a form, every alert, every login attempt.
REVOKE UPDATE, DELETE ON record_forms, security_alerts, login_attempts FROM custos_app;

-- Recordings closed before this migration: their seals anchored now, so
-- that every closed recording has its recording.seal entry.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM recordings WHERE state IN ('sealed', 'damaged', 'interrupted')
               AND chain_head IS NOT NULL) THEN
        PERFORM audit_append(array_agg('system'::text), array_agg('recording.seal'::text),
                             array_agg('recording:' || id || ' state=' || state || ' segments='
                                       || segment_count || ' head=' || encode(chain_head, 'hex')
                                       ORDER BY opened_at, id),
                             array_agg('ok'::text), array_agg('local'::text))
        FROM recordings WHERE state IN ('sealed', 'damaged', 'interrupted')
             AND chain_head IS NOT NULL;
    END IF;
END
$$;

-- What later migrations create is the application's to use unless they
-- say otherwise (each evidence table revokes what it must).
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO custos_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO custos_app;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO custos_app;
