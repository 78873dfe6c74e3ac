-- The migration history belongs to the role that migrates. Where another
-- role could write to it (a runtime role gets INSERT, UPDATE and DELETE on
-- every table the schema owner creates, through the owner's default
-- privileges, and this table is created by the first migration run), it
-- keeps what it may read: the service checks this table to decide that the
-- schema is current, so a runtime role must not be able to forge it.
DO $history$
DECLARE
    grantee text;
BEGIN
    FOR grantee IN
        SELECT DISTINCT g.grantee
        FROM information_schema.role_table_grants AS g
        WHERE g.table_schema = current_schema()
          AND g.table_name = '_sqlx_migrations'
          AND g.grantee <> current_user
          AND g.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
    LOOP
        EXECUTE format(
            'REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON _sqlx_migrations FROM %s',
            CASE WHEN grantee = 'PUBLIC' THEN 'PUBLIC' ELSE quote_ident(grantee) END);
    END LOOP;
END
$history$;
