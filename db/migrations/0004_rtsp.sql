-- RTSP (docs/rtsp.md): each device's digest password, and for cameras that
-- ingestd pulls from, the URL to pull (it may hold credentials). Both are
-- only ever stored wrapped by a key-encryption key, like the SRTP key.
ALTER TABLE devices
    ADD COLUMN rtsp_kek_id    text,
    ADD COLUMN rtsp_wrapped   bytea,
    ADD COLUMN pull_kek_id    text,
    ADD COLUMN pull_wrapped   bytea,
    ADD COLUMN pull_transport text CHECK (pull_transport IN ('tcp', 'udp')),
    ADD CONSTRAINT devices_rtsp_secret CHECK ((rtsp_kek_id IS NULL) = (rtsp_wrapped IS NULL)),
    ADD CONSTRAINT devices_pull CHECK ((pull_kek_id IS NULL) = (pull_wrapped IS NULL)
                                       AND (pull_wrapped IS NULL) = (pull_transport IS NULL));
