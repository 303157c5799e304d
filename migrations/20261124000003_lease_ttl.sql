-- The lease's term, written by its holder (as a Kubernetes Lease carries
-- leaseDurationSeconds): a candidate judges a lapse by the holder's term,
-- not by its own BERTH_LEASE_TTL, so an instance configured with a shorter
-- TTL cannot take a host while its holder may still act, and `berth status`
-- judges each host by the term its berth runs with.
--
-- Additive (expand): an older berth neither writes nor reads it (a NULL
-- term falls back to the candidate's own TTL), so the floor stays.

ALTER TABLE host_leases
    ADD COLUMN ttl interval CONSTRAINT host_leases_ttl_check CHECK (ttl > interval '0');
