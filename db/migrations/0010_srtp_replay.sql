-- SRTP replay across restarts (docs/srtp-replay.md): each device's highest
-- accepted SRTP packet index (ROC << 16 | SEQ) and SRTCP index, saved by
-- ingestd every ingest.replay_save_ms and at a clean stop, so that after a
-- restart packets captured before it are refused. A mark only grows: the
-- application may not lower or delete one (an insider who could would open
-- the replay window again).

CREATE TABLE srtp_replay_marks (
    device_id  bigint      PRIMARY KEY REFERENCES devices (id),
    rtp_index  bigint      NOT NULL CHECK (rtp_index BETWEEN 0 AND 281474976710655),
    rtp_step   bigint      NOT NULL CHECK (rtp_step BETWEEN 0 AND 281474976710655),
    rtcp_index bigint      NOT NULL CHECK (rtcp_index BETWEEN 0 AND 2147483647),
    rtcp_step  bigint      NOT NULL CHECK (rtcp_step BETWEEN 0 AND 2147483647),
    -- saved at a clean stop: nothing was accepted after it
    clean      boolean     NOT NULL,
    saved_at   timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION srtp_replay_marks_grow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'device %: an SRTP replay mark is never deleted', OLD.device_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.device_id <> OLD.device_id OR NEW.rtp_index < OLD.rtp_index
       OR NEW.rtcp_index < OLD.rtcp_index THEN
        RAISE EXCEPTION 'device %: an SRTP replay mark only grows', OLD.device_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER srtp_replay_marks_grow BEFORE UPDATE OR DELETE ON srtp_replay_marks
    FOR EACH ROW EXECUTE FUNCTION srtp_replay_marks_grow();

REVOKE DELETE ON srtp_replay_marks FROM custos_app;
