-- Permission workflow and access rules (MISSION rules 1 and 4,
-- docs/control.md): who heads a department, the permission group, requests
-- that go head -> group -> grant, grants valid only inside their window, the
-- notices a holder gets before a revocation, and the one predicate every
-- read of recordings goes through.

ALTER TABLE departments ADD COLUMN head_user_id bigint REFERENCES users (id);

CREATE TABLE permission_group_members (
    user_id  bigint      PRIMARY KEY REFERENCES users (id),
    added_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE permission_requests (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    requester_id      bigint      NOT NULL REFERENCES users (id),
    kind              text        NOT NULL CHECK (kind IN ('new', 'change')),
    permission        text        NOT NULL CHECK (permission IN ('reviewer', 'admin')),
    department_id     bigint      NOT NULL REFERENCES departments (id),
    reason            text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 2000),
    valid_from        timestamptz NOT NULL,
    valid_until       timestamptz NOT NULL,
    changes_grant_id  bigint,
    state             text        NOT NULL DEFAULT 'submitted'
                      CHECK (state IN ('submitted', 'preliminary_approved', 'rejected', 'granted')),
    head_id           bigint      REFERENCES users (id),
    head_decided_at   timestamptz,
    head_note         text        CHECK (length(head_note) <= 2000),
    group_id          bigint      REFERENCES users (id),
    group_decided_at  timestamptz,
    group_note        text        CHECK (length(group_note) <= 2000),
    created_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_until > valid_from)
);
CREATE INDEX permission_requests_state ON permission_requests (state, department_id);

CREATE TABLE grants (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint      NOT NULL REFERENCES users (id),
    permission    text        NOT NULL CHECK (permission IN ('reviewer', 'admin')),
    department_id bigint      NOT NULL REFERENCES departments (id),
    valid_from    timestamptz NOT NULL,
    valid_until   timestamptz NOT NULL,
    request_id    bigint      REFERENCES permission_requests (id),
    revoked_at    timestamptz,
    revoked_by    bigint      REFERENCES users (id),
    revoke_reason text        CHECK (length(revoke_reason) <= 2000),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_until > valid_from)
);
CREATE INDEX grants_user ON grants (user_id);
ALTER TABLE permission_requests
    ADD FOREIGN KEY (changes_grant_id) REFERENCES grants (id);

CREATE TABLE notices (
    id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id  bigint      NOT NULL REFERENCES users (id),
    at       timestamptz NOT NULL DEFAULT now(),
    kind     text        NOT NULL CHECK (kind IN ('grant_revoked', 'request_decided')),
    grant_id bigint      REFERENCES grants (id),
    text     text        NOT NULL CHECK (length(text) <= 2000)
);
CREATE INDEX notices_user ON notices (user_id, at);

-- The departments a user reviews at @p at: those of their grants valid then
-- (from inclusive, until exclusive, not revoked), with every department below.
CREATE FUNCTION review_scope(p_user bigint, p_at timestamptz)
RETURNS TABLE (department_id bigint) LANGUAGE sql STABLE AS $$
    WITH RECURSIVE scope(id) AS (
        SELECT g.department_id FROM grants g
        WHERE g.user_id = p_user AND g.revoked_at IS NULL
          AND g.valid_from <= p_at AND p_at < g.valid_until
        UNION
        SELECT d.id FROM departments d JOIN scope s ON d.parent_id = s.id
    )
    SELECT id FROM scope
$$;

-- Rule 4, the one place: the recordings user @p p_user may read at @p p_at.
-- Admins: everything. Everyone: their own recordings (they were the
-- officer). Reviewers by grant: recordings of officers in their scope. A
-- disabled or locked account reads nothing. Simple enough for the planner
-- to inline into the queries that use it.
CREATE FUNCTION visible_recordings(p_user bigint, p_at timestamptz)
RETURNS TABLE (id uuid) LANGUAGE sql STABLE AS $$
    SELECT r.id FROM recordings r, users u
    WHERE u.id = p_user AND u.disabled_at IS NULL AND u.locked_at IS NULL
      AND (u.role = 'admin'
           OR r.officer_id = p_user
           OR r.officer_id IN (SELECT o.id FROM users o
                               WHERE o.department_id IN (SELECT department_id
                                                         FROM review_scope(p_user, p_at))))
$$;

-- The same rule for one recording.
CREATE FUNCTION may_read_recording(p_user bigint, p_rec uuid, p_at timestamptz)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM visible_recordings(p_user, p_at) v WHERE v.id = p_rec)
$$;

CREATE INDEX recordings_opened ON recordings (opened_at);

-- Enforcement record forms (docs/control.md): each edit is a new version;
-- nothing is overwritten.
CREATE TABLE record_forms (
    recording_id uuid        NOT NULL REFERENCES recordings (id),
    version      integer     NOT NULL CHECK (version > 0),
    case_number  text        NOT NULL CHECK (case_number ~ '^[A-Za-z0-9/_.-]{1,40}$'),
    location     text        NOT NULL CHECK (length(location) BETWEEN 1 AND 200),
    occurred_at  timestamptz NOT NULL,
    parties      text[]      NOT NULL CHECK (cardinality(parties) <= 50),
    summary      text        NOT NULL CHECK (length(summary) BETWEEN 1 AND 5000),
    edited_by    bigint      NOT NULL REFERENCES users (id),
    edited_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (recording_id, version)
);

-- Who may edit a recording's form: its officer, and admins (reviewers read it).
CREATE FUNCTION may_edit_form(p_user bigint, p_rec uuid) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM users u, recordings r
        WHERE u.id = p_user AND u.disabled_at IS NULL AND u.locked_at IS NULL AND r.id = p_rec
          AND (u.role = 'admin' OR r.officer_id = p_user))
$$;
