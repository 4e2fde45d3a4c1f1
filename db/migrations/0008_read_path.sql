-- The read path (docs/control.md, "Read path"): rule 4 as one function that
-- says what a user may read (reader_scope), everything else built on it, a
-- page of recordings the planner serves from an index, and the audit append
-- as one statement that takes a batch of entries.

-- Pages are ordered by (opened_at, id) descending: both indexes end in id.
DROP INDEX recordings_officer;
CREATE INDEX recordings_officer ON recordings (officer_id, opened_at, id);
DROP INDEX recordings_opened;
CREATE INDEX recordings_opened ON recordings (opened_at, id);

-- Rule 4, the one place: what user @p p_user may read at @p p_at. Admins:
-- everything. Everyone else: the recordings whose officer is in @c officers,
-- which holds the user themself and every officer of a department in the
-- scope of a grant valid at @p p_at (valid_from inclusive, valid_until
-- exclusive, not revoked), departments below included. A disabled or locked
-- account reads nothing. PL/pgSQL so that its plans are kept per connection.
CREATE FUNCTION reader_scope(p_user bigint, p_at timestamptz,
                             OUT everything boolean, OUT officers bigint[])
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_role text;
BEGIN
    SELECT u.role INTO v_role FROM users u
    WHERE u.id = p_user AND u.disabled_at IS NULL AND u.locked_at IS NULL;
    everything := coalesce(v_role = 'admin', false);
    IF v_role IS NULL OR everything THEN
        officers := '{}';
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM grants g
                   WHERE g.user_id = p_user AND g.revoked_at IS NULL
                     AND g.valid_from <= p_at AND p_at < g.valid_until) THEN
        officers := ARRAY[p_user];
        RETURN;
    END IF;
    officers := array(
        WITH RECURSIVE scope(id) AS (
            SELECT g.department_id FROM grants g
            WHERE g.user_id = p_user AND g.revoked_at IS NULL
              AND g.valid_from <= p_at AND p_at < g.valid_until
            UNION
            SELECT d.id FROM departments d JOIN scope s ON d.parent_id = s.id)
        SELECT p_user
        UNION
        SELECT o.id FROM users o WHERE o.department_id IN (SELECT id FROM scope));
END
$$;

-- The recordings @p p_user may read at @p p_at (for sets; reads of one
-- recording use may_read_recording, pages recordings_page).
CREATE OR REPLACE FUNCTION visible_recordings(p_user bigint, p_at timestamptz)
RETURNS TABLE (id uuid) LANGUAGE sql STABLE AS $$
    SELECT r.id FROM reader_scope(p_user, p_at) s, recordings r
    WHERE s.everything OR r.officer_id = ANY (s.officers)
$$;

CREATE OR REPLACE FUNCTION may_read_recording(p_user bigint, p_rec uuid, p_at timestamptz)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM reader_scope(p_user, p_at) s, recordings r
                   WHERE r.id = p_rec AND (s.everything OR r.officer_id = ANY (s.officers)))
$$;

DROP FUNCTION review_scope(bigint, timestamptz);

-- One page of what @p p_user may read at @p p_at, newest first: rows
-- p_offset + 1 .. p_offset + p_limit. Admins walk recordings_opened; others
-- walk recordings_officer once per officer in scope (at most p_offset +
-- p_limit rows each) when there are few of them, or sort the officers'
-- recordings when there are many. Only the rows of the page are looked up
-- (by key, so that a generic plan cannot turn them into scans of whole
-- tables). A single SELECT, so the planner inlines it into the caller's
-- statement.
CREATE FUNCTION recordings_page(p_user bigint, p_at timestamptz, p_offset integer,
                                p_limit integer)
RETURNS TABLE (id uuid, device text, officer text, department text, opened_at timestamptz,
               sealed_at timestamptz, state text, segments bigint)
LANGUAGE sql STABLE AS $$
    SELECT r.id, (SELECT dv.serial FROM devices dv WHERE dv.id = r.device_id),
           (SELECT o.username FROM users o WHERE o.id = r.officer_id),
           (SELECT od.name FROM users o JOIN departments od ON od.id = o.department_id
            WHERE o.id = r.officer_id),
           r.opened_at, r.sealed_at, r.state, r.segment_count
    FROM (SELECT v.* FROM reader_scope(p_user, p_at) s
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
    ORDER BY r.opened_at DESC, r.id DESC
$$;

-- One field of an entry as hashed: its UTF-8 length (4 bytes, big-endian),
-- then its bytes.
CREATE FUNCTION audit_field(p text) RETURNS bytea LANGUAGE sql STABLE STRICT AS $$
    SELECT int4send(octet_length(convert_to(p, 'UTF8'))) || convert_to(p, 'UTF8')
$$;

-- Append entries actor[i], action[i], ... in order, chained (docs/control.md:
-- hash = SHA-256(prev ‖ seq ‖ at_ms ‖ fields)), all with the time of the
-- append; the first one's seq. One statement, so a batch costs one round
-- trip and one lock. ingestctl audit verify recomputes the same hash in C,
-- independently of this function.
CREATE FUNCTION audit_append(p_actor text[], p_action text[], p_object text[],
                             p_outcome text[], p_source text[])
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    n      integer := coalesce(cardinality(p_actor), 0);
    v_seq  bigint;
    v_prev bytea;
    v_ms   bigint;
    seqs   bigint[];
    prevs  bytea[];
    hashes bytea[];
BEGIN
    IF n = 0 OR coalesce(cardinality(p_action), -1) <> n OR coalesce(cardinality(p_object), -1) <> n
       OR coalesce(cardinality(p_outcome), -1) <> n OR coalesce(cardinality(p_source), -1) <> n THEN
        RAISE EXCEPTION 'audit_append: % entries with fields missing', n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(7263840001);
    SELECT l.seq, l.hash INTO v_seq, v_prev FROM audit_log l ORDER BY l.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        v_seq := 0;
        v_prev := sha256(convert_to('custos-audit-v1:' || (SELECT id::text FROM instance), 'UTF8'));
    END IF;
    v_ms := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    FOR i IN 1 .. n LOOP
        v_seq := v_seq + 1;
        seqs[i] := v_seq;
        prevs[i] := v_prev;
        v_prev := sha256(v_prev || int8send(v_seq) || int8send(v_ms)
                         || audit_field(p_actor[i]) || audit_field(p_action[i])
                         || audit_field(p_object[i]) || audit_field(p_outcome[i])
                         || audit_field(p_source[i]));
        hashes[i] := v_prev;
    END LOOP;
    INSERT INTO audit_log (seq, at, actor, action, object, outcome, source, prev_hash, hash)
    SELECT e.seq, 'epoch'::timestamptz + v_ms * interval '1 millisecond', e.actor, e.action,
           e.object, e.outcome, e.source, e.prev, e.hash
    FROM unnest(seqs, p_actor, p_action, p_object, p_outcome, p_source, prevs, hashes)
         AS e(seq, actor, action, object, outcome, source, prev, hash);
    RETURN seqs[1];
END
$$;

-- The session behind a bearer token (its SHA-256), as every request checks
-- it: refused (a code and why) when unknown, ended, idle for 30 minutes,
-- older than 12 hours, or when the account is disabled or locked; expiry is
-- decided here, at use. last_seen_at is written at most once a minute.
CREATE FUNCTION session_check(p_token_hash bytea, OUT session_id bigint, OUT user_id bigint,
                              OUT username text, OUT role text, OUT refused text,
                              OUT refused_why text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    s record;
BEGIN
    SELECT ss.id, ss.user_id, u.username, u.role,
           ss.revoked_at IS NOT NULL AS ended,
           now() - ss.last_seen_at > interval '30 minutes' AS idle,
           now() - ss.created_at > interval '12 hours' AS old,
           u.disabled_at IS NOT NULL OR u.locked_at IS NOT NULL AS barred,
           now() - ss.last_seen_at > interval '60 seconds' AS stale
    INTO s FROM sessions ss JOIN users u ON u.id = ss.user_id
    WHERE ss.token_hash = p_token_hash;
    IF NOT FOUND THEN
        refused := 'invalid_token';
        refused_why := 'the token is not one this server issued';
        RETURN;
    END IF;
    refused_why := CASE WHEN s.ended THEN 'the session was ended (logged out or revoked)'
                        WHEN s.idle THEN 'the session was idle for more than 30 minutes'
                        WHEN s.old THEN 'the session is older than 12 hours'
                        WHEN s.barred THEN 'the account is disabled or locked' END;
    IF refused_why IS NOT NULL THEN
        refused := 'session_expired';
        RETURN;
    END IF;
    IF s.stale THEN
        UPDATE sessions SET last_seen_at = now() WHERE id = s.id;
    END IF;
    session_id := s.id;
    user_id := s.user_id;
    username := s.username;
    role := s.role;
END
$$;
