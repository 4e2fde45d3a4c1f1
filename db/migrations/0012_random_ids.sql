-- The ids a caller sees are not sequential (docs/control.md,
-- "Authorization"): a permission request's, grant's, share's, notice's or
-- security alert's id tells nothing of how many others exist or when it was
-- made. From now on they are random 52-bit integers (exact in JSON); those
-- made before keep theirs. Lists are ordered by time, not by id.

CREATE FUNCTION random_id() RETURNS bigint LANGUAGE sql VOLATILE AS $$
    SELECT ('x' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 13))::bit(52)::bigint + 1
$$;

ALTER TABLE permission_requests ALTER COLUMN id DROP IDENTITY;
ALTER TABLE permission_requests ALTER COLUMN id SET DEFAULT random_id();
ALTER TABLE grants ALTER COLUMN id DROP IDENTITY;
ALTER TABLE grants ALTER COLUMN id SET DEFAULT random_id();
ALTER TABLE shares ALTER COLUMN id DROP IDENTITY;
ALTER TABLE shares ALTER COLUMN id SET DEFAULT random_id();
ALTER TABLE notices ALTER COLUMN id DROP IDENTITY;
ALTER TABLE notices ALTER COLUMN id SET DEFAULT random_id();
ALTER TABLE security_alerts ALTER COLUMN id DROP IDENTITY;
ALTER TABLE security_alerts ALTER COLUMN id SET DEFAULT random_id();

CREATE INDEX permission_requests_created ON permission_requests (created_at);
CREATE INDEX shares_created ON shares (created_at);
