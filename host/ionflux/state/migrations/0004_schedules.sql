-- Version 4: scheduled triggers' state with the rest of a cluster's state:
-- each schedule's last fire time (what a host starting again reports as missed)
-- and one row per fire claimed, so a fire runs on one host only. Claims older
-- than a week are pruned by the hosts (triggers/_schedule.py, SharedScheduleState).

CREATE TABLE schedule_last (
    key TEXT PRIMARY KEY,
    last_fire DOUBLE PRECISION NOT NULL
);
CREATE TABLE schedule_fires (
    key TEXT NOT NULL,
    fire BIGINT NOT NULL,
    claimed_by TEXT NOT NULL,
    claimed_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (key, fire)
);
CREATE INDEX schedule_fires_age ON schedule_fires (claimed_at);
