-- Each running host process's revocation feed: how far it has read (seen, a
-- seq of ionwall_revocations) and when it last did (beat, the database's
-- clock, in epoch seconds), with the bound past which it denies everything.
-- A revoke waits until every feed still within its bound has seen it.
CREATE TABLE ionwall_feeds (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    seen BIGINT NOT NULL,
    beat DOUBLE PRECISION NOT NULL,
    bound DOUBLE PRECISION NOT NULL
);
