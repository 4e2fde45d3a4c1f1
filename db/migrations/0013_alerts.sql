-- Security alerts reach people (docs/alerts.md): the kinds ingest raises, a
-- state each alert goes through (new, acknowledged, closed) kept as a
-- history the application cannot rewrite, and the delivery of each alert
-- to alerts.command.

ALTER TABLE security_alerts DROP CONSTRAINT security_alerts_kind_check;
ALTER TABLE security_alerts ADD CONSTRAINT security_alerts_kind_check
    CHECK (kind IN ('failure_burst', 'locked_account_attempt', 'privileged_new_source',
                    'recording_damaged', 'login_throttled', 'account_locked',
                    'device_revoked_attempt', 'srtp_replay', 'rtsp_auth_failures'));

-- An alert's state changes, newest last; no row: new. Each is someone's decision.
CREATE TABLE alert_states (
    alert_id bigint      NOT NULL REFERENCES security_alerts (id),
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    state    text        NOT NULL CHECK (state IN ('acknowledged', 'closed')),
    by_user  bigint      NOT NULL REFERENCES users (id),
    note     text        CHECK (length(note) <= 2000)
);
CREATE INDEX alert_states_alert ON alert_states (alert_id, at);
REVOKE UPDATE, DELETE ON alert_states FROM custos_app;

-- Delivery to alerts.command (operational: no one's decision, not audited).
CREATE TABLE alert_deliveries (
    alert_id        bigint      PRIMARY KEY REFERENCES security_alerts (id),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text        CHECK (length(last_error) <= 500)
);

-- An alert raised by ingest (a revoked device still trying, replayed SRTP,
-- RTSP authentication failures), with its audit entry, in one statement.
CREATE FUNCTION alert_raise(p_kind text, p_subject text, p_source text, p_detail text)
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO security_alerts (kind, username, source, detail)
    VALUES (p_kind, p_subject, p_source, p_detail) RETURNING id INTO v_id;
    PERFORM audit_append(ARRAY['system'], ARRAY['alert.raise'],
                         ARRAY['alert ' || v_id || ' ' || p_kind || ' ' || p_subject],
                         ARRAY['ok'], ARRAY[left(p_source, 100)]);
    RETURN v_id;
END
$$;
