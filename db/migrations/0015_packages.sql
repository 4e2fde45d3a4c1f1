-- Evidence packages (docs/package.md): each asked for over the API is a row
-- here, queued, built once by the API's packager into
-- <data-dir>/packages/<id>.zip, downloaded as often as allowed while it is
-- kept, and removed after export.package_keep_h (the row stays, 'expired').
-- Its SHA-256 is recorded when it is built: every download is checked
-- against it and audited with it. One made through a share link is
-- requested by the share's requester and reachable only through that link
-- (and by those who may read the recording).
CREATE TABLE packages (
    id           uuid        PRIMARY KEY,
    recording_id uuid        NOT NULL REFERENCES recordings (id),
    start_us     bigint,     -- the range asked for; NULL: from the start / to the end
    end_us       bigint      CHECK (end_us IS NULL OR start_us IS NULL OR end_us > start_us),
    reason       text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    requested_by bigint      NOT NULL REFERENCES users (id),
    actor        text        NOT NULL,
    share_id     bigint      REFERENCES shares (id), -- made through this share link
    requested_at timestamptz NOT NULL DEFAULT now(),
    state        text        NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'building', 'ready', 'failed', 'expired')),
    started_at   timestamptz,
    ready_at     timestamptz,
    expires_at   timestamptz,
    bytes        bigint      CHECK (bytes >= 0),
    sha256       bytea       CHECK (length(sha256) = 32),
    error        text        CHECK (length(error) <= 600)
);
CREATE INDEX packages_queue ON packages (requested_at) WHERE state IN ('queued', 'building');
CREATE INDEX packages_recording ON packages (recording_id, requested_at);
CREATE INDEX packages_expiry ON packages (expires_at) WHERE state = 'ready';
REVOKE DELETE ON packages FROM custos_app;
