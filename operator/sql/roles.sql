-- Database roles of the PostgreSQL the operator deploys. Run by the superuser, in the
-- service's database, on every new version of this file or of its settings: it must be
-- idempotent, and it must also bring an instance created before the roles existed (every
-- table owned by the superuser) to the same state as a new one.
--
-- Inputs are session settings, so the same text runs under psql (the operator's Job passes
-- them in PGOPTIONS) and under any client (the tests SET them):
--   shortener.owner_role, shortener.owner_password     the schema owner: runs the migrations
--   shortener.app_role, shortener.app_password         the runtime role: serves requests
--   shortener.statement_timeout                        e.g. '10s', set on the runtime role
--   shortener.idle_in_transaction_session_timeout      e.g. '30s', set on the runtime role
-- A missing setting is an error (current_setting without missing_ok), never a default.
DO $roles$
DECLARE
    owner_role text := current_setting('shortener.owner_role');
    owner_password text := current_setting('shortener.owner_password');
    app_role text := current_setting('shortener.app_role');
    app_password text := current_setting('shortener.app_password');
    statement_timeout text := current_setting('shortener.statement_timeout');
    idle_timeout text := current_setting('shortener.idle_in_transaction_session_timeout');
    relation record;
BEGIN
    IF owner_role = '' OR app_role = '' OR owner_role = app_role THEN
        RAISE EXCEPTION 'owner and runtime roles must be two distinct names';
    END IF;
    IF owner_password = '' OR app_password = '' THEN
        RAISE EXCEPTION 'both roles need a password';
    END IF;

    -- The roles, created once; their attributes and passwords are set on every run, so a
    -- role someone altered by hand is brought back.
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = owner_role) THEN
        EXECUTE format('CREATE ROLE %I', owner_role);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = app_role) THEN
        EXECUTE format('CREATE ROLE %I', app_role);
    END IF;
    EXECUTE format(
        'ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L',
        owner_role, owner_password);
    EXECUTE format(
        'ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT PASSWORD %L',
        app_role, app_password);
    -- Limits on the role itself: PgBouncer's transaction pooling drops startup options, and
    -- a statement the service stopped waiting for is work for nobody.
    EXECUTE format('ALTER ROLE %I SET statement_timeout = %L', app_role, statement_timeout);
    EXECUTE format('ALTER ROLE %I SET idle_in_transaction_session_timeout = %L',
        app_role, idle_timeout);

    -- Only the two roles (and superusers) may connect; nobody may create temporary tables.
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I, %I',
        current_database(), owner_role, app_role);

    -- The owner owns the schema and everything in it. Relations another role owns (an
    -- instance migrated by the superuser before the roles existed) are handed over; a
    -- sequence that belongs to a column follows its table.
    EXECUTE format('ALTER SCHEMA public OWNER TO %I', owner_role);
    REVOKE ALL ON SCHEMA public FROM PUBLIC;
    FOR relation IN
        SELECT c.oid::regclass AS name
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public'
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
          AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = owner_role)
          AND NOT EXISTS (
              SELECT FROM pg_depend d
              WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                AND (d.deptype = 'e' OR (c.relkind = 'S' AND d.deptype IN ('a', 'i'))))
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO %I', relation.name, owner_role);
    END LOOP;

    -- The runtime role: reads and writes rows, uses sequences, nothing else (no CREATE on
    -- the schema, no TRUNCATE, REFERENCES or TRIGGER). Tables the owner creates later are
    -- granted the same by default privileges.
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', app_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO %I',
        app_role);
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO %I', app_role);
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I',
        owner_role, app_role);
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO %I',
        owner_role, app_role);
    -- The migration history is the owner's; the runtime role may read it, not rewrite it.
    -- (On a new instance the table appears with the first migration, after this ran: the
    -- service's migration 6 narrows the grant in that same first run.)
    IF to_regclass('public._sqlx_migrations') IS NOT NULL THEN
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON public._sqlx_migrations FROM %I',
            app_role);
    END IF;
END
$roles$;
