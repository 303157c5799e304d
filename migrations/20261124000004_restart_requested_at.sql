-- When `restart_epoch` last changed, kept by a trigger: a container that
-- started after it has had its restart, whichever berth process did it and
-- whatever else of the row changed since (`desired_changed_at` moves with
-- any desired column, so it cannot tell a restart done from one wanted).
--
-- Additive (expand): an older berth neither reads nor writes it (a NULL
-- falls back to `desired_changed_at`), so the floor stays.

ALTER TABLE workspaces ADD COLUMN restart_requested_at timestamptz;

CREATE FUNCTION berth_workspaces_restart_requested() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.restart_epoch IS DISTINCT FROM OLD.restart_epoch THEN
        NEW.restart_requested_at := now();
    ELSE
        NEW.restart_requested_at := OLD.restart_requested_at;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER workspaces_restart_requested BEFORE UPDATE ON workspaces
    FOR EACH ROW EXECUTE FUNCTION berth_workspaces_restart_requested();
