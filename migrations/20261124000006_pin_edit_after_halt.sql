-- A raw edit of a pin's digest that sets neither `updated_by` nor `note`
-- inherits them from the row. After a halt, that made the operator's edit
-- read as berth's (`updated_by = 'berth'`, the halt's note): `berth
-- status` listed it as a halt, and `berth rollback` skipped the digest it
-- moved away from as one berth had halted. A digest change that keeps
-- `updated_by = 'berth'` from the row is berth's only when the changing
-- transaction says so (`berth.pin_by`, set by berth's halt); otherwise it
-- is recorded as the database user's, and the halt's note goes with it.
--
-- Additive (expand): an older berth's halt sets `updated_by = 'berth'` on
-- a row an operator changed last, which stays as it is; so the floor stays.

CREATE OR REPLACE FUNCTION berth_pins_before_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    IF NEW.digest IS DISTINCT FROM OLD.digest
       AND OLD.updated_by = 'berth' AND NEW.updated_by = 'berth'
       AND coalesce(current_setting('berth.pin_by', true), '') <> 'berth' THEN
        NEW.updated_by := session_user;
        IF NEW.note IS NOT DISTINCT FROM OLD.note THEN
            NEW.note := NULL;
        END IF;
    END IF;
    RETURN NEW;
END $$;
