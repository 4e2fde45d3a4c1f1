-- A capture's tracks together (docs/export.md, "Captures"): an RTSP session
-- that records video and audio makes one recording per track, each with
-- the same capture id in its meta file (under the hash chain) and here, so
-- that a clip, a package and the API carry them together. Set once, when
-- the recording's row is made; never changed after (the guard below).
ALTER TABLE recordings ADD COLUMN capture_id uuid;
CREATE INDEX recordings_capture ON recordings (capture_id) WHERE capture_id IS NOT NULL;
GRANT UPDATE (capture_id) ON recordings TO custos_app;

CREATE FUNCTION recordings_capture_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.capture_id IS NOT NULL AND NEW.capture_id IS DISTINCT FROM OLD.capture_id THEN
        RAISE EXCEPTION 'recording %: its capture never changes', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER recordings_capture_fixed BEFORE UPDATE OF capture_id ON recordings
    FOR EACH ROW EXECUTE FUNCTION recordings_capture_fixed();
