-- Settings every node of a cluster shares. `master_key_check` holds a value sealed
-- under the master key when the first node started: a node whose master key cannot
-- open it refuses to start, so no node can seal secrets the others cannot read.
CREATE TABLE cluster_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
