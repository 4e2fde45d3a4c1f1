-- The identity of one Custos installation. The data directory records the
-- same id (<data-dir>/instance), so a data dir is never paired with another
-- installation's database by mistake (a wrong db.dsn, a restored backup).
CREATE TABLE instance (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- exactly one row
    singleton  boolean     NOT NULL DEFAULT true UNIQUE CHECK (singleton)
);

INSERT INTO instance DEFAULT VALUES;
