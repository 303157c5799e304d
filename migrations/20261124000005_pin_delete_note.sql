-- A deleted pin's history entry names who deleted it and why when the
-- deleting transaction says so (`berth.pin_by`, `berth.pin_note`, set with
-- set_config(…, true)): berth deletes a ring's pin it halts when the pin
-- was new (the ring followed stable or the tag before), and the history
-- says berth did it and why, as for a pin it writes back. Without those
-- settings the entry is as before: the database user, 'pin deleted'.
--
-- Additive (expand): an older berth never deletes pins, so the floor stays.

CREATE OR REPLACE FUNCTION berth_pins_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO runtime_image_pin_history (template_name, ring, old_digest, new_digest, updated_by, note)
            VALUES (NEW.template_name, NEW.ring, NULL, NEW.digest, NEW.updated_by, NEW.note);
        PERFORM pg_notify('berth_pins', NEW.template_name || '/' || NEW.ring);
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO runtime_image_pin_history (template_name, ring, old_digest, new_digest, updated_by, note)
            VALUES (NEW.template_name, NEW.ring, OLD.digest, NEW.digest, NEW.updated_by, NEW.note);
        PERFORM pg_notify('berth_pins', NEW.template_name || '/' || NEW.ring);
        IF (NEW.template_name, NEW.ring) IS DISTINCT FROM (OLD.template_name, OLD.ring) THEN
            PERFORM pg_notify('berth_pins', OLD.template_name || '/' || OLD.ring);
        END IF;
    ELSE
        INSERT INTO runtime_image_pin_history (template_name, ring, old_digest, new_digest, updated_by, note)
            VALUES (OLD.template_name, OLD.ring, OLD.digest, NULL,
                    coalesce(nullif(current_setting('berth.pin_by', true), ''), current_user),
                    coalesce(nullif(current_setting('berth.pin_note', true), ''), 'pin deleted'));
        PERFORM pg_notify('berth_pins', OLD.template_name || '/' || OLD.ring);
    END IF;
    RETURN NULL;
END $$;
