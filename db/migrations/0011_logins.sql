-- Logins that cannot be turned against us (docs/control.md, "Logins"):
-- lockout keys on (account, source address); past a per-account ceiling the
-- account is locked to addresses it never logged in from (its known
-- addresses, and the sessions it has, go on); alerts for a throttled address
-- and for that lock.

ALTER TABLE users ADD COLUMN new_sources_locked_at timestamptz;

CREATE INDEX login_attempts_user_source ON login_attempts (user_id, source, at);

ALTER TABLE security_alerts DROP CONSTRAINT security_alerts_kind_check;
ALTER TABLE security_alerts ADD CONSTRAINT security_alerts_kind_check
    CHECK (kind IN ('failure_burst', 'locked_account_attempt', 'privileged_new_source',
                    'recording_damaged', 'login_throttled', 'account_locked'));

-- A session as its user sees it in GET /api/v1/sessions: by a random id,
-- not by the row's sequence number.
ALTER TABLE sessions ADD COLUMN public_id uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE;
