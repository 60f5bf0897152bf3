-- Certificate authorities. The private key is stored only encrypted
-- (AES-256-GCM with the broker's secrets key, base64 text). At most one row
-- is the default, enforced by a partial unique index, so replicas racing to
-- create the first default CA produce one winner. broker/ca creates it at
-- start, so there is exactly one once the broker runs.
CREATE TABLE certificate_authorities (
    id              TEXT PRIMARY KEY,
    subject         TEXT NOT NULL,
    not_after       BIGINT NOT NULL,
    is_default      INTEGER NOT NULL DEFAULT 0,
    key_algorithm   TEXT NOT NULL,
    certificate_pem TEXT NOT NULL,
    encrypted_key   TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX certificate_authorities_one_default ON certificate_authorities (is_default) WHERE is_default = 1;
