-- Version 2: what a cluster asks of the run history most, indexed. Every host
-- reads the runs it drives (its leases and the operator controls asked of them)
-- at each lease renewal, and every host looks for orphans (open top-level runs)
-- at each resume interval: without these, both scan the whole runs table.

CREATE INDEX runs_lease_owner ON runs (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX runs_open ON runs (run_id)
    WHERE status IN ('accepted', 'running') AND parent_run_id IS NULL;
