-- The pin history says which entries are berth's halts, and who deleted a
-- pin and why.
--
-- A halt is marked by the transaction that makes it (`berth.pin_by =
-- 'berth'`, set with set_config(…, true) by berth's halt alone), in a
-- column of its own. `updated_by = 'berth'` could not tell: a raw digest
-- edit that sets neither `updated_by` nor `note` inherits them from the
-- row (after a halt, the operator's edit read as berth's halt: `berth
-- status` listed it, and `berth rollback` skipped the digest it moved
-- away from), and an operator working as the `berth` login or database
-- role is recorded as `berth`. Entries before this migration keep what
-- `updated_by` said. A digest change that inherits `updated_by = 'berth'`
-- from the row is recorded as the database user's (`db:<role>`), and the
-- halt's note does not go with it.
--
-- A delete's entry takes who and why from the same transaction settings
-- (`berth.pin_by`, `berth.pin_note`): berth removes a ring's pin it halts
-- when the pin was new (the ring followed stable or the tag before).
-- Without them it is as before: the database user, 'pin deleted'.
--
-- Additive (expand): an older berth neither reads nor writes `halt` and
-- never deletes pins, so the floor stays.

ALTER TABLE runtime_image_pin_history ADD COLUMN halt boolean NOT NULL DEFAULT false;
UPDATE runtime_image_pin_history SET halt = true WHERE updated_by = 'berth';

CREATE OR REPLACE FUNCTION berth_pins_before_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    IF NEW.digest IS DISTINCT FROM OLD.digest
       AND OLD.updated_by = 'berth' AND NEW.updated_by = 'berth'
       AND coalesce(current_setting('berth.pin_by', true), '') <> 'berth' THEN
        NEW.updated_by := 'db:' || session_user;
        IF NEW.note IS NOT DISTINCT FROM OLD.note THEN
            NEW.note := NULL;
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION berth_pins_history() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    by_berth boolean := coalesce(current_setting('berth.pin_by', true), '') = 'berth';
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO runtime_image_pin_history (template_name, ring, old_digest, new_digest, updated_by, note)
            VALUES (NEW.template_name, NEW.ring, NULL, NEW.digest, NEW.updated_by, NEW.note);
        PERFORM pg_notify('berth_pins', NEW.template_name || '/' || NEW.ring);
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO runtime_image_pin_history (template_name, ring, old_digest, new_digest, updated_by, note, halt)
            VALUES (NEW.template_name, NEW.ring, OLD.digest, NEW.digest, NEW.updated_by, NEW.note, by_berth);
        PERFORM pg_notify('berth_pins', NEW.template_name || '/' || NEW.ring);
        IF (NEW.template_name, NEW.ring) IS DISTINCT FROM (OLD.template_name, OLD.ring) THEN
            PERFORM pg_notify('berth_pins', OLD.template_name || '/' || OLD.ring);
        END IF;
    ELSE
        INSERT INTO runtime_image_pin_history (template_name, ring, old_digest, new_digest, updated_by, note, halt)
            VALUES (OLD.template_name, OLD.ring, OLD.digest, NULL,
                    coalesce(nullif(current_setting('berth.pin_by', true), ''), current_user),
                    coalesce(nullif(current_setting('berth.pin_note', true), ''), 'pin deleted'),
                    by_berth);
        PERFORM pg_notify('berth_pins', OLD.template_name || '/' || OLD.ring);
    END IF;
    RETURN NULL;
END $$;
