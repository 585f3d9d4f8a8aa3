-- IONWALL's state in PostgreSQL (state.backend: postgres): what every host shares.
-- Applied once, in a transaction, by ionwall.migrate_postgres (at open, and by
-- `ionflux db migrate`); recorded in ionwall_schema_migrations.

-- Consent requests and grants: the same columns as the SQLite store (ionwall/_store.py).
CREATE TABLE ionwall_consents (
    id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    subject TEXT NOT NULL,
    transform TEXT NOT NULL,
    version TEXT NOT NULL,
    scopes TEXT NOT NULL,
    publisher TEXT,
    signature_valid INTEGER,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL,
    answered_at DOUBLE PRECISION,
    answered_by TEXT,
    grant_id TEXT
);
CREATE UNIQUE INDEX ionwall_consents_one_pending
    ON ionwall_consents (fingerprint) WHERE status = 'pending';

CREATE TABLE ionwall_grants (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    transform TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    token TEXT NOT NULL,
    kind TEXT NOT NULL,
    consent_id TEXT,
    fingerprint TEXT,
    revoked_at DOUBLE PRECISION
);
CREATE INDEX ionwall_grants_fingerprint ON ionwall_grants (fingerprint);

-- Every revocation, in the order they were made: the feed every host follows
-- (NOTIFY ionwall_revocations carries the seq; a host that lost the feed
-- re-reads from the last seq it saw).
CREATE TABLE ionwall_revocations (
    seq BIGSERIAL PRIMARY KEY,
    grant_id TEXT NOT NULL,
    revoked_at DOUBLE PRECISION NOT NULL
);

-- Each host's public key (the kid of its tokens and of its audit checkpoints).
CREATE TABLE ionwall_keys (
    kid TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    host TEXT NOT NULL,
    published_at DOUBLE PRECISION NOT NULL
);

-- One hash chain per host (per signing key): entries, signed checkpoints, head.
-- ``line`` is the entry exactly as hashed (see ionwall/_audit.py); ``at`` (its
-- time) only orders `audit tail` across chains: verify never trusts it.
CREATE TABLE ionwall_audit (
    chain TEXT NOT NULL,
    idx BIGINT NOT NULL,
    at TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (chain, idx)
);
CREATE INDEX ionwall_audit_at ON ionwall_audit (at);
CREATE TABLE ionwall_audit_checkpoints (
    chain TEXT NOT NULL,
    count BIGINT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (chain, count)
);
CREATE TABLE ionwall_audit_heads (
    chain TEXT PRIMARY KEY,
    count BIGINT NOT NULL,
    last TEXT NOT NULL,
    signed BIGINT NOT NULL
);
