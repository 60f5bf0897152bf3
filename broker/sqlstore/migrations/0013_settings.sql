-- Broker-wide settings every replica must agree on, by name. The first
-- replica to start writes them (under the database's init lock), the others
-- check theirs against them: secrets_key_check is an HMAC that tells whether
-- a replica's secrets key is the one that encrypted the CA keys.
CREATE TABLE broker_settings (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
