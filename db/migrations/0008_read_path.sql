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
-- account gets no row: it reads nothing. A single SELECT, so the planner
-- inlines it into the statements that use it.
CREATE FUNCTION reader_scope(p_user bigint, p_at timestamptz)
RETURNS TABLE (everything boolean, officers bigint[]) LANGUAGE sql STABLE AS $$
    SELECT u.role = 'admin',
           CASE WHEN u.role = 'admin' THEN '{}'::bigint[] ELSE array(
               WITH RECURSIVE scope(id) AS (
                   SELECT g.department_id FROM grants g
                   WHERE g.user_id = p_user AND g.revoked_at IS NULL
                     AND g.valid_from <= p_at AND p_at < g.valid_until
                   UNION
                   SELECT d.id FROM departments d JOIN scope s ON d.parent_id = s.id)
               SELECT p_user
               UNION
               SELECT o.id FROM users o WHERE o.department_id = ANY (array(SELECT id FROM scope)))
           END
    FROM users u WHERE u.id = p_user AND u.disabled_at IS NULL AND u.locked_at IS NULL
$$;

CREATE INDEX users_department ON users (department_id);

-- When what @p p_user may read changes by the clock alone: the nearest start
-- or end after @p p_at of one of their grants (NULL: not by the clock).
CREATE FUNCTION reader_scope_changes_at(p_user bigint, p_at timestamptz)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT min(v.t) FROM grants g, LATERAL (VALUES (g.valid_from), (g.valid_until)) v(t)
    WHERE g.user_id = p_user AND g.revoked_at IS NULL AND v.t > p_at
$$;

-- The read generation (docs/control.md, "Read path"): every committed change
-- to what a page of recordings shows, or to who may read it, moves it on,
-- in the changing transaction. Changes commit in generation order (the row
-- lock serializes them), so a snapshot that sees generation G sees exactly
-- the changes up to G: a page computed at G is still exact while the
-- generation is G and no grant of its reader starts or ends.
CREATE TABLE read_generation (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    gen bigint  NOT NULL
);
INSERT INTO read_generation (gen) VALUES (1);

CREATE FUNCTION read_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE read_generation SET gen = gen + 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER read_generation AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON recordings
    FOR EACH STATEMENT EXECUTE FUNCTION read_generation_bump();
CREATE TRIGGER read_generation AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON grants
    FOR EACH STATEMENT EXECUTE FUNCTION read_generation_bump();
CREATE TRIGGER read_generation AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON departments
    FOR EACH STATEMENT EXECUTE FUNCTION read_generation_bump();
CREATE TRIGGER read_generation AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF serial ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION read_generation_bump();
CREATE TRIGGER read_generation AFTER INSERT OR DELETE OR TRUNCATE
    OR UPDATE OF username, role, department_id, disabled_at, locked_at ON users
    FOR EACH STATEMENT EXECUTE FUNCTION read_generation_bump();

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
-- recordings when there are many. Only the rows of the page are joined.
-- The caller orders the rows (opened_at, id descending). A single SELECT, so
-- the planner inlines it into the caller's statement.
CREATE FUNCTION recordings_page(p_user bigint, p_at timestamptz, p_offset integer,
                                p_limit integer)
RETURNS TABLE (id uuid, device text, officer text, department text, opened_at timestamptz,
               sealed_at timestamptz, state text, segments bigint)
LANGUAGE sql STABLE AS $$
    SELECT r.id, dv.serial, o.username, od.name, r.opened_at, r.sealed_at, r.state,
           r.segment_count
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
-- decided here, at use. Always one row. stale: last_seen_at is more than a
-- minute old, and whoever accepts the session writes it (session_check, or
-- the read path's audit statement). A single SELECT, so it is inlined.
CREATE FUNCTION session_row(p_token_hash bytea)
RETURNS TABLE (session_id bigint, user_id bigint, username text, role text, refused text,
               refused_why text, stale boolean)
LANGUAGE sql STABLE AS $$
    SELECT ss.id, ss.user_id, u.username, u.role,
           CASE WHEN ss.id IS NULL THEN 'invalid_token'
                WHEN ss.revoked_at IS NOT NULL
                  OR now() - ss.last_seen_at > interval '30 minutes'
                  OR now() - ss.created_at > interval '12 hours'
                  OR u.disabled_at IS NOT NULL OR u.locked_at IS NOT NULL THEN 'session_expired'
           END,
           CASE WHEN ss.id IS NULL THEN 'the token is not one this server issued'
                WHEN ss.revoked_at IS NOT NULL THEN 'the session was ended (logged out or revoked)'
                WHEN now() - ss.last_seen_at > interval '30 minutes'
                    THEN 'the session was idle for more than 30 minutes'
                WHEN now() - ss.created_at > interval '12 hours'
                    THEN 'the session is older than 12 hours'
                WHEN u.disabled_at IS NOT NULL OR u.locked_at IS NOT NULL
                    THEN 'the account is disabled or locked'
           END,
           now() - ss.last_seen_at > interval '60 seconds'
    FROM (SELECT p_token_hash AS token_hash) t
    LEFT JOIN sessions ss ON ss.token_hash = t.token_hash
    LEFT JOIN users u ON u.id = ss.user_id
$$;

-- session_row, and last_seen_at written when it is accepted and stale.
CREATE FUNCTION session_check(p_token_hash bytea, OUT session_id bigint, OUT user_id bigint,
                              OUT username text, OUT role text, OUT refused text,
                              OUT refused_why text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_stale boolean;
BEGIN
    SELECT s.session_id, s.user_id, s.username, s.role, s.refused, s.refused_why, s.stale
    INTO session_id, user_id, username, role, refused, refused_why, v_stale
    FROM session_row(p_token_hash) s;
    IF refused IS NULL AND v_stale THEN
        UPDATE sessions SET last_seen_at = now() WHERE id = session_id;
    END IF;
END
$$;
