-- berth's database contract (DESIGN §1.1–1.2).
--
-- Enumerations are text columns with named CHECK constraints rather than
-- enum types: a constraint is replaced in one expand/contract step, and the
-- error names the constraint (and so the column) that refused a value.

-- The compatibility floor: the oldest berth schema version still allowed to
-- run against this database. A migration that contracts the schema (drops or
-- changes something an older berth relies on) raises it.
CREATE TABLE berth_schema (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    floor       integer NOT NULL CHECK (floor >= 1),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO berth_schema (floor) VALUES (1);

-- The runtime catalogue. Operators add a runtime by inserting a row.
CREATE TABLE runtimes (
    name              text PRIMARY KEY
                      CONSTRAINT runtimes_name_check CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    image_repository  text NOT NULL
                      CONSTRAINT runtimes_image_repository_check
                      CHECK (image_repository ~ '^[a-z0-9]+([._/-][a-z0-9]+)*$'),
    provision_timeout interval
                      CONSTRAINT runtimes_provision_timeout_check CHECK (provision_timeout > interval '0'),
    session_volume    boolean NOT NULL DEFAULT false
);

-- image_repository defaults to workspace-template-<name>.
CREATE FUNCTION berth_runtimes_defaults() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.image_repository IS NULL THEN
        NEW.image_repository := 'workspace-template-' || NEW.name;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER runtimes_defaults BEFORE INSERT OR UPDATE ON runtimes
    FOR EACH ROW EXECUTE FUNCTION berth_runtimes_defaults();

INSERT INTO runtimes (name, session_volume) VALUES
    ('langgraph', false),
    ('claude-code', true),
    ('openclaw', false),
    ('deepagents', false),
    ('crewai', false),
    ('autogen', false),
    ('hermes', false),
    ('gemini-cli', false),
    ('codex', false);

CREATE TABLE workspaces (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                 text NOT NULL DEFAULT '',
    runtime              text NOT NULL,
    tier                 integer NOT NULL DEFAULT 2,
    ring                 text NOT NULL DEFAULT 'stable',
    host                 text NOT NULL DEFAULT 'default',

    -- intent
    desired_state        text NOT NULL DEFAULT 'running'
                         CONSTRAINT workspaces_desired_state_check
                         CHECK (desired_state IN ('running', 'stopped', 'removed')),

    -- container inputs
    env                  jsonb NOT NULL DEFAULT '{}'
                         CONSTRAINT workspaces_env_check CHECK (jsonb_typeof(env) = 'object'),
    image                text,
    workspace_dir        text,
    workspace_access     text NOT NULL DEFAULT 'none'
                         CONSTRAINT workspaces_workspace_access_check
                         CHECK (workspace_access IN ('none', 'read_only', 'read_write')),
    template_path        text,
    config_files         jsonb NOT NULL DEFAULT '{}'
                         CONSTRAINT workspaces_config_files_check
                         CHECK (jsonb_typeof(config_files) = 'object'),
    auth_token           text,
    awareness_url        text,
    awareness_namespace  text,

    -- handles
    session_epoch        bigint NOT NULL DEFAULT 0,
    restart_epoch        bigint NOT NULL DEFAULT 0,
    paused               boolean NOT NULL DEFAULT false,

    -- bumped by trigger when a desired column changes, never by berth
    generation           bigint NOT NULL DEFAULT 1,
    desired_changed_at   timestamptz NOT NULL DEFAULT now(),
    created_at           timestamptz NOT NULL DEFAULT now(),

    -- observed state, written by berth only
    status               text,
    status_reason        text,
    container_id         text,
    runtime_image_digest text,
    runtime_image_id     text,
    url                  text,
    observed_generation  bigint,
    status_changed_at    timestamptz,
    restart_count        integer NOT NULL DEFAULT 0,
    last_error           text,
    rollout              jsonb,
    -- written by the agent or the platform, read by berth
    last_heartbeat_at    timestamptz,

    -- The closed table of DESIGN §1.2: each status with its allowed reasons.
    -- coalesce: a NULL status or reason must not make the check NULL, which
    -- would pass it.
    CONSTRAINT workspaces_status_check CHECK (coalesce(
        (status IS NULL AND status_reason IS NULL)
        OR (status = 'provisioning' AND coalesce(status_reason, '') IN (
                'pulling', 'building', 'creating', 'starting', 'waiting_ready',
                'image_not_found', 'registry_auth', 'registry_rate_limited',
                'image_build_failed'))
        OR (status = 'online' AND (status_reason IS NULL OR status_reason = 'rolled_back'))
        OR (status = 'degraded' AND coalesce(status_reason, '') IN ('crash_loop', 'change_blocked'))
        OR (status = 'failed' AND coalesce(status_reason, '') IN (
                'invalid_spec', 'tier_not_allowed', 'name_conflict', 'start_failed',
                'config_missing', 'provision_timeout'))
        OR (status IN ('stopped', 'paused', 'removed') AND status_reason IS NULL),
        false)),
    CONSTRAINT workspaces_runtime_image_digest_check
        CHECK (runtime_image_digest ~ '^sha256:[0-9a-f]{64}$')
);

CREATE INDEX workspaces_host_idx ON workspaces (host);

-- generation counts changes of the desired columns (as Kubernetes'
-- metadata.generation); desired_changed_at starts the provision clock.
-- Writes of the controller-owned columns leave both alone, and nobody can
-- set generation by hand. host is fixed once set: only a row that is
-- removed (desired and done) may move to another host.
CREATE FUNCTION berth_workspaces_before_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.host IS DISTINCT FROM OLD.host
       AND NOT (OLD.desired_state = 'removed' AND OLD.status IS NOT DISTINCT FROM 'removed') THEN
        RAISE EXCEPTION 'workspaces.host is fixed once set: workspace % is on host "%"; set desired_state to removed and let berth finish before moving it', OLD.id, OLD.host
            USING ERRCODE = 'check_violation', COLUMN = 'host', TABLE = 'workspaces';
    END IF;
    IF (NEW.name, NEW.runtime, NEW.tier, NEW.ring, NEW.host, NEW.desired_state, NEW.env,
        NEW.image, NEW.workspace_dir, NEW.workspace_access, NEW.template_path,
        NEW.config_files, NEW.auth_token, NEW.awareness_url, NEW.awareness_namespace,
        NEW.session_epoch, NEW.restart_epoch, NEW.paused)
       IS DISTINCT FROM
       (OLD.name, OLD.runtime, OLD.tier, OLD.ring, OLD.host, OLD.desired_state, OLD.env,
        OLD.image, OLD.workspace_dir, OLD.workspace_access, OLD.template_path,
        OLD.config_files, OLD.auth_token, OLD.awareness_url, OLD.awareness_namespace,
        OLD.session_epoch, OLD.restart_epoch, OLD.paused) THEN
        NEW.generation := OLD.generation + 1;
        NEW.desired_changed_at := now();
    ELSE
        NEW.generation := OLD.generation;
        NEW.desired_changed_at := OLD.desired_changed_at;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER workspaces_before_update BEFORE UPDATE ON workspaces
    FOR EACH ROW EXECUTE FUNCTION berth_workspaces_before_update();

CREATE FUNCTION berth_workspaces_before_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.generation := 1;
    NEW.desired_changed_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER workspaces_before_insert BEFORE INSERT ON workspaces
    FOR EACH ROW EXECUTE FUNCTION berth_workspaces_before_insert();

-- Notifications carry only the key; berth rereads the row.
CREATE FUNCTION berth_workspaces_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('berth_workspaces', OLD.id::text);
    ELSE
        PERFORM pg_notify('berth_workspaces', NEW.id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER workspaces_notify_insert_delete AFTER INSERT OR DELETE ON workspaces
    FOR EACH ROW EXECUTE FUNCTION berth_workspaces_notify();
CREATE TRIGGER workspaces_notify_update AFTER UPDATE ON workspaces
    FOR EACH ROW WHEN (OLD.generation IS DISTINCT FROM NEW.generation)
    EXECUTE FUNCTION berth_workspaces_notify();

-- Digest pins per runtime and ring. No row = the moving tag.
CREATE TABLE runtime_image_pins (
    template_name text NOT NULL,
    ring          text NOT NULL DEFAULT 'stable',
    digest        text NOT NULL
                  CONSTRAINT runtime_image_pins_digest_check
                  CHECK (digest ~ '^sha256:[0-9a-f]{64}$'),
    updated_by    text NOT NULL DEFAULT current_user,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    note          text,
    PRIMARY KEY (template_name, ring)
);

-- Every pin change, so "roll back" is "set the previous stable digest".
-- db_user is the database role that made the change, whatever updated_by
-- claims.
CREATE TABLE runtime_image_pin_history (
    id            bigserial PRIMARY KEY,
    template_name text NOT NULL,
    ring          text NOT NULL,
    old_digest    text,
    new_digest    text,
    updated_by    text,
    db_user       text NOT NULL DEFAULT session_user,
    note          text,
    at            timestamptz NOT NULL DEFAULT now(),
    stable_at     timestamptz
);
CREATE INDEX runtime_image_pin_history_pin_idx
    ON runtime_image_pin_history (template_name, ring, id DESC);

CREATE FUNCTION berth_pins_before_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER runtime_image_pins_before_update BEFORE UPDATE ON runtime_image_pins
    FOR EACH ROW EXECUTE FUNCTION berth_pins_before_update();

CREATE FUNCTION berth_pins_history() RETURNS trigger LANGUAGE plpgsql AS $$
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
            VALUES (OLD.template_name, OLD.ring, OLD.digest, NULL, current_user, 'pin deleted');
        PERFORM pg_notify('berth_pins', OLD.template_name || '/' || OLD.ring);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER runtime_image_pins_history AFTER INSERT OR UPDATE OR DELETE ON runtime_image_pins
    FOR EACH ROW EXECUTE FUNCTION berth_pins_history();

-- The audit trail, append-only; pruned after BERTH_EVENTS_RETENTION.
-- workspace_id has no foreign key: the trail outlives a deleted row.
CREATE TABLE workspace_events (
    id           bigserial PRIMARY KEY,
    workspace_id uuid NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    action       text NOT NULL,
    reason       text NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}',
    host         text NOT NULL,
    instance     text NOT NULL,
    epoch        bigint NOT NULL
);
CREATE INDEX workspace_events_workspace_idx ON workspace_events (workspace_id, at DESC);
CREATE INDEX workspace_events_at_idx ON workspace_events (at);

-- One writer per host: the holder with the current epoch (DESIGN §4).
CREATE TABLE host_leases (
    host        text PRIMARY KEY,
    holder      text NOT NULL,
    epoch       bigint NOT NULL CHECK (epoch >= 1),
    renewed_at  timestamptz NOT NULL DEFAULT now(),
    acquired_at timestamptz NOT NULL DEFAULT now()
);
