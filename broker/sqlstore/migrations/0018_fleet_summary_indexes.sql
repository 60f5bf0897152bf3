-- Covering indexes for the fleet summary's two GROUP BY queries
-- (FleetStore.FleetStats, run on every GET /fleet/summary): each is answered
-- from its index in key order, without reading the table or sorting. On
-- SQLite at 10,000 cores this took the summary from about 9 ms to 2 ms of
-- the broker's CPU.
CREATE INDEX cores_desired_status ON cores (desired_name, desired_version, deployment_status);
CREATE INDEX cores_reported ON cores (reported_name, reported_version);
