-- Dashboard sessions (broker/auth): the browser holds an opaque session id
-- in an HttpOnly cookie; only its SHA-256 (hex) is stored, with its expiry
-- and the hash of the API token it was made from, so revoking that token
-- ends the session. Expired rows are deleted at the next login.
CREATE TABLE ui_sessions (
    hash       TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);
