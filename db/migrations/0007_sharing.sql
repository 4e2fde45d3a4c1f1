-- External sharing (MISSION rule 4: giving data to an outside party needs an
-- approval workflow; docs/control.md): a request names the recipient, the
-- recordings, the reason and the expiry; an approver (admin or permission
-- group, never the requester) approves it, which makes an expiring link
-- usable without an account; each use is audited; it can be revoked.
CREATE TABLE shares (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    requester_id bigint      NOT NULL REFERENCES users (id),
    recipient    text        NOT NULL CHECK (length(recipient) BETWEEN 1 AND 200),
    reason       text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 2000),
    expires_at   timestamptz NOT NULL,
    state        text        NOT NULL DEFAULT 'requested'
                 CHECK (state IN ('requested', 'approved', 'rejected', 'revoked')),
    approver_id  bigint      REFERENCES users (id),
    decided_at   timestamptz,
    note         text        CHECK (length(note) <= 2000),
    -- SHA-256 of the link's token, set at approval; the token itself is shown once
    token_hash   bytea       UNIQUE CHECK (length(token_hash) = 32),
    revoked_at   timestamptz,
    revoked_by   bigint      REFERENCES users (id),
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE share_recordings (
    share_id     bigint NOT NULL REFERENCES shares (id),
    recording_id uuid   NOT NULL REFERENCES recordings (id),
    PRIMARY KEY (share_id, recording_id)
);
