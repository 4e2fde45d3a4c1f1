-- Control plane core: login state, sessions, and the append-only,
-- hash-chained audit log. docs/control.md.

ALTER TABLE users
    ADD COLUMN locked_at       timestamptz,
    -- failures before the last unlock no longer count towards a lock
    ADD COLUMN unlocked_at     timestamptz,
    ADD COLUMN password_set_at timestamptz,
    -- the TOTP secret, only ever stored wrapped by a KEK; the last time step
    -- used, so that a code is accepted once
    ADD COLUMN totp_kek_id     text,
    ADD COLUMN totp_wrapped    bytea,
    ADD COLUMN totp_last_step  bigint NOT NULL DEFAULT 0;

CREATE TABLE login_attempts (
    id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id  bigint      REFERENCES users (id),
    username text        NOT NULL CHECK (length(username) <= 200),
    at       timestamptz NOT NULL DEFAULT now(),
    source   text        NOT NULL CHECK (length(source) <= 100),
    ok       boolean     NOT NULL
);
CREATE INDEX login_attempts_user ON login_attempts (user_id, at);

-- Abnormal logins, for admins (and the security department) to see.
CREATE TABLE security_alerts (
    id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    kind     text        NOT NULL CHECK (kind IN ('failure_burst', 'locked_account_attempt',
                                                  'privileged_new_source')),
    username text        NOT NULL CHECK (length(username) <= 200),
    source   text        NOT NULL CHECK (length(source) <= 100),
    detail   text        NOT NULL DEFAULT '' CHECK (length(detail) <= 1000)
);
CREATE INDEX security_alerts_at ON security_alerts (at);

CREATE TABLE sessions (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- SHA-256 of the bearer token; the token itself is never stored
    token_hash   bytea       NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    user_id      bigint      NOT NULL REFERENCES users (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    source       text        NOT NULL CHECK (length(source) <= 100)
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE audit_log (
    seq       bigint      PRIMARY KEY CHECK (seq > 0),
    at        timestamptz NOT NULL,
    actor     text        NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    action    text        NOT NULL CHECK (length(action) BETWEEN 1 AND 100),
    object    text        NOT NULL CHECK (length(object) <= 1000),
    outcome   text        NOT NULL CHECK (outcome IN ('ok', 'denied', 'failed')),
    source    text        NOT NULL CHECK (length(source) <= 100),
    prev_hash bytea       NOT NULL CHECK (length(prev_hash) = 32),
    hash      bytea       NOT NULL CHECK (length(hash) = 32)
);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
-- The role Custos connects as (the owner here) gives up changing entries.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC, CURRENT_USER;
