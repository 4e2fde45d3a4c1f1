-- Identity (departments, users) in the shape the control plane builds on,
-- devices with their SRTP keys, and who carries which device when.
-- docs/devices.md.

CREATE TABLE departments (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    parent_id  bigint      REFERENCES departments (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (parent_id IS NULL OR parent_id <> id)
);

CREATE TABLE users (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text        NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9][a-z0-9._-]{1,63}$'),
    display_name  text        NOT NULL DEFAULT '' CHECK (length(display_name) <= 200),
    role          text        NOT NULL CHECK (role IN ('officer', 'reviewer', 'admin')),
    department_id bigint      REFERENCES departments (id),
    -- argon2id, set by the control plane; NULL: the account cannot log in yet
    password_hash text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);

-- Every change to a device takes a new version, so ingestd picks up changes
-- (a new device, a revocation) in order by polling for versions above the last.
CREATE SEQUENCE device_version_seq;

CREATE TABLE devices (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    serial       text        NOT NULL UNIQUE CHECK (serial ~ '^[A-Za-z0-9._-]{1,64}$'),
    ssrc         bigint      NOT NULL UNIQUE CHECK (ssrc BETWEEN 1 AND 4294967295),
    suite        text        NOT NULL
                 CHECK (suite IN ('aes_cm_128_hmac_sha1_80', 'aead_aes_256_gcm')),
    codec        text        NOT NULL DEFAULT 'h264' CHECK (codec IN ('h264', 'h265', 'audio')),
    payload_type smallint    NOT NULL DEFAULT 96 CHECK (payload_type BETWEEN 0 AND 127),
    clock_rate   integer     NOT NULL DEFAULT 90000 CHECK (clock_rate BETWEEN 1000 AND 192000),
    -- the SRTP master key and salt, only ever stored wrapped by a KEK
    key_kek_id   text        NOT NULL,
    key_wrapped  bytea       NOT NULL,
    state        text        NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'revoked')),
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    version      bigint      NOT NULL DEFAULT nextval('device_version_seq')
);
CREATE INDEX devices_version ON devices (version);

CREATE TABLE device_assignments (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id      bigint      NOT NULL REFERENCES devices (id),
    user_id        bigint      NOT NULL REFERENCES users (id),
    assigned_from  timestamptz NOT NULL DEFAULT now(),
    assigned_until timestamptz,
    CHECK (assigned_until IS NULL OR assigned_until > assigned_from)
);
-- at most one open assignment per device
CREATE UNIQUE INDEX device_assignments_open ON device_assignments (device_id)
    WHERE assigned_until IS NULL;
CREATE INDEX device_assignments_device ON device_assignments (device_id, assigned_from);

-- A recording belongs to the device that made it and to the officer the
-- device was assigned to when it started.
ALTER TABLE recordings
    ADD COLUMN device_id  bigint REFERENCES devices (id),
    ADD COLUMN officer_id bigint REFERENCES users (id);
CREATE INDEX recordings_officer ON recordings (officer_id, opened_at);
CREATE INDEX recordings_device ON recordings (device_id, opened_at);
