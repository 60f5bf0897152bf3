-- API bearer tokens. Only the SHA-256 of a token is stored (hex), the token
-- itself is shown once. At most one active (unrevoked) token per name, so two
-- replicas racing to create the first admin token produce one winner.
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL DEFAULT 0,
    revoked      INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens (name) WHERE revoked = 0;
CREATE INDEX api_tokens_name ON api_tokens (name);

-- One-time core enrollment tokens, stored hashed (hex SHA-256). claimed_at is
-- set while an enrollment is in progress (a lease: a crashed enrollment's
-- claim expires), used_at once the enrollment finished.
CREATE TABLE enrollment_tokens (
    hash       TEXT PRIMARY KEY,
    core_name  TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    claimed_at BIGINT NOT NULL DEFAULT 0,
    used_at    BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE INDEX enrollment_tokens_core ON enrollment_tokens (core_name);
