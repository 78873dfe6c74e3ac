//! The database roles the operator sets up (`operator/sql/roles.sql`, the very file its
//! role-setup Job runs) on a real PostgreSQL: the schema owner runs the migrations
//! (`shortener migrate`, waiting for its role as the operator's init container does), the
//! runtime role, with migrate-on-start off, serves a whole create/redirect/update/delete cycle, directly and through
//! PgBouncer in transaction pooling, and can do nothing else: no DDL, no ownership, no
//! superuser, and the statement timeout set on the role itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::private_pg::PrivatePgBouncer;
use common::{Backend, TestApp, TestDatabase, expect_json};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection, Row};

const ROLES_SQL: &str = include_str!("../../operator/sql/roles.sql");
const STATEMENT_TIMEOUT: &str = "2s";
const IDLE_TIMEOUT: &str = "20s";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Two roles of this test's own (roles are cluster-wide and the test PostgreSQL is shared),
/// dropped after the database that refers to them.
struct Roles {
    owner: String,
    app: String,
    admin_url: String,
}

impl Roles {
    fn new() -> Self {
        let n = format!(
            "{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        Self {
            owner: format!("roles_test_owner_{n}"),
            app: format!("roles_test_app_{n}"),
            admin_url: common::admin_database_url(),
        }
    }

    /// Runs the role SQL as the superuser on `database_url`, with its inputs as settings.
    async fn apply(&self, database_url: &str) {
        let mut conn = PgConnection::connect(database_url).await.unwrap();
        for (name, value) in [
            ("shortener.owner_role", self.owner.as_str()),
            ("shortener.owner_password", "owner-secret"),
            ("shortener.app_role", self.app.as_str()),
            ("shortener.app_password", "app-secret"),
            ("shortener.statement_timeout", STATEMENT_TIMEOUT),
            (
                "shortener.idle_in_transaction_session_timeout",
                IDLE_TIMEOUT,
            ),
        ] {
            sqlx::query("SELECT set_config($1, $2, false)")
                .bind(name)
                .bind(value)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(ROLES_SQL))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        let (admin, owner, app) = (self.admin_url.clone(), self.owner.clone(), self.app.clone());
        let outcome = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin).await?;
                for role in [app, owner] {
                    conn.execute(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
                        .await?;
                }
                Ok::<_, sqlx::Error>(())
            })
        })
        .join();
        if !matches!(outcome, Ok(Ok(()))) {
            eprintln!("dropping the test roles failed: {outcome:?}");
        }
    }
}

/// `url` with another user (the test servers trust local connections: no password).
fn as_user(url: &str, user: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    parsed.set_username(user).unwrap();
    parsed.to_string()
}

const PGBOUNCER_ADMIN: &str = "pgbouncer_admin";

/// A PgBouncer of the test's own in front of the test PostgreSQL, authenticating as the
/// operator configures it: SCRAM against a userlist of the runtime role and the pooler's
/// own admin, the only user of its console.
fn pgbouncer_for(db: &TestDatabase, roles: &Roles) -> PrivatePgBouncer {
    let userlist = format!(
        "\"{}\" \"app-secret\"\n\"{PGBOUNCER_ADMIN}\" \"admin-secret\"\n",
        roles.app
    );
    let auth = format!(
        "auth_type = scram-sha-256\nadmin_users = {PGBOUNCER_ADMIN}\nstats_users = {PGBOUNCER_ADMIN}\n"
    );
    PrivatePgBouncer::in_front_of(db.server_addr().port(), &userlist, &auth)
}

/// `direct`'s database through `bouncer`, as `user` with `password`.
fn through(bouncer: &PrivatePgBouncer, direct: &str, user: &str, password: &str) -> String {
    let database = url::Url::parse(direct).unwrap().path().to_owned();
    format!(
        "postgres://{user}:{password}@127.0.0.1:{}{database}",
        bouncer.port
    )
}

/// The pooler's console belongs to its admin user: the service's role is refused there.
async fn assert_console_is_the_admins(bouncer: &PrivatePgBouncer, roles: &Roles, bounced: &str) {
    let console = |user: &str, password: &str| {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/pgbouncer?statement-cache-capacity=0",
            bouncer.port
        )
    };
    let refused = PgConnection::connect(&console(&roles.app, "app-secret")).await;
    let err = refused.expect_err("the runtime role opened the PgBouncer console");
    assert!(err.to_string().contains("not allowed"), "{err}");
    let mut admin = PgConnection::connect(&console(PGBOUNCER_ADMIN, "admin-secret"))
        .await
        .unwrap();
    // The console speaks only the simple query protocol.
    sqlx::raw_sql("SHOW POOLS")
        .execute(&mut admin)
        .await
        .unwrap();
    let wrong = PgConnection::connect(&bounced.replace("app-secret", "wrong")).await;
    assert!(wrong.is_err(), "PgBouncer let a wrong password in");
}

/// `shortener migrate` (the real binary) as the schema owner, straight to PostgreSQL, as the
/// operator's init container runs it: waiting while its role does not exist yet.
fn spawn_migrate(db: &TestDatabase, roles: &Roles, log: &std::path::Path) -> std::process::Child {
    std::process::Command::new(common::server::BIN)
        .arg("migrate")
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env("MIGRATION_DATABASE_URL", as_user(&db.url, &roles.owner))
        .env("MIGRATE_WAIT_FOR_ROLE", "true")
        .env("MIGRATE_WAIT_SECS", "60")
        .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn migrate_as_owner(db: &TestDatabase, roles: &Roles) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("migrate.log");
    let status = spawn_migrate(db, roles, &log).wait().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "migrate as the owner: {stderr}");
}

/// The service as deployed: `shortener migrate` ran as the owner, then `serve` as the runtime
/// role with migrate-on-start off (it has no URL with the owner's password at all).
async fn serve(db: &Arc<TestDatabase>, roles: &Roles, runtime: &str) -> TestApp {
    migrate_as_owner(db, roles);
    TestApp::start(
        db.clone(),
        &["--database-url", runtime, "--migrate-on-start", "false"],
    )
    .await
}

/// Create, redirect (and its click written), update, read back, delete, as the runtime role.
async fn full_cycle(app: &TestApp) {
    let user = app.create_user("ada", "ada@example.com").await;
    let url = app
        .create_url(json!({"original_url": "https://example.com/a", "user_id": user["id"]}))
        .await;
    let (id, code) = (
        url["id"].as_i64().unwrap(),
        url["short_code"].as_str().unwrap(),
    );
    let res = app.get(&format!("/{code}")).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    let res = app
        .put(
            &format!("/urls/{id}"),
            json!({"original_url": "https://example.com/b"}),
        )
        .await;
    expect_json(res, StatusCode::OK).await;
    let res = app.get(&format!("/{code}")).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(res.headers()["location"], "https://example.com/b");
    // Clicks are written in batches: wait for both to be counted.
    let mut counted = json!(null);
    for _ in 0..100 {
        counted = app.get_json(&format!("/urls/{id}/stats")).await["redirect_count"].clone();
        if counted == json!(2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(counted, json!(2));
    assert_eq!(
        app.delete(&format!("/urls/{id}")).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("/{code}")).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&format!("/users/{}", user["id"])).await.status(),
        StatusCode::NO_CONTENT
    );
}

/// What the runtime role may not do, asked over its own connection (`url`).
async fn assert_runtime_role_is_confined(url: &str, roles: &Roles) {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let who: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(who, roles.app);
    for statement in [
        "CREATE TABLE intruder (id int)",
        "CREATE TEMPORARY TABLE intruder (id int)",
        "CREATE INDEX intruder ON urls (original_url)",
        "ALTER TABLE urls ADD COLUMN intruder int",
        "DROP TABLE events",
        "TRUNCATE urls",
        "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE SCHEMA intruder",
        "ALTER TABLE urls RENAME TO intruder",
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
         VALUES (999999, 'forged', now(), true, '\\x00', 0)",
        "DELETE FROM _sqlx_migrations",
        "SET ROLE postgres",
    ] {
        let err = conn
            .execute(statement)
            .await
            .expect_err(&format!("the runtime role ran {statement}"));
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(
            code.as_deref(),
            Some("42501"),
            "{statement}: want insufficient_privilege, got {err}"
        );
    }
    let row = sqlx::query(
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, rolinherit \
         FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    for flag in 0..5 {
        assert!(!row.get::<bool, _>(flag), "role attribute {flag} is set");
    }
    let owns: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(owns, 0, "the runtime role owns relations");
    let schema_owner: String = sqlx::query_scalar(
        "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(schema_owner, roles.owner);
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(timeout, STATEMENT_TIMEOUT);
    let idle: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(idle, IDLE_TIMEOUT);
    // And the timeout is enforced, not only shown.
    let err = conn
        .execute("SELECT pg_sleep(60)")
        .await
        .expect_err("pg_sleep(60) outlived the statement timeout");
    let code = err.as_database_error().and_then(|e| e.code());
    assert_eq!(code.as_deref(), Some("57014"), "{err}");
}

/// Every relation of the schema belongs to the owner.
async fn assert_owner_owns_everything(admin_url: &str, roles: &Roles) {
    let mut conn = PgConnection::connect(admin_url).await.unwrap();
    let foreign: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relowner::regrole::text <> $1",
    )
    .bind(&roles.owner)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(foreign.is_empty(), "not owned by the owner: {foreign:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_role_serves_requests_and_cannot_change_the_schema() {
    // Declared first, dropped last: after the database that refers to the roles.
    let roles = Roles::new();
    let db = Arc::new(TestDatabase::new(Backend::Postgres).await);

    // The init container may start before the role-setup Job has run: its login is refused
    // ("role does not exist") and it waits, then migrates once the roles are there.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("migrate.log");
    let mut early = spawn_migrate(&db, &roles, &log);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("login refused")
    {
        assert!(
            early.try_wait().unwrap().is_none(),
            "migrate gave up at once"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no login attempt seen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    roles.apply(&db.url).await;
    // Idempotent: a second run (the next version of the Job) changes nothing that matters.
    roles.apply(&db.url).await;
    let status = early.wait().unwrap();
    let stdout = std::fs::read_to_string(log.with_extension("out")).unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(stdout.contains("applied migration 1 (init)"), "{stdout}");

    let app = serve(&db, &roles, &as_user(&db.url, &roles.app)).await;
    full_cycle(&app).await;
    assert_owner_owns_everything(&db.url, &roles).await;
    // Confined from the first run on: the migration history, which the first migration run
    // creates after the role SQL has run, is narrowed by a migration itself.
    assert_runtime_role_is_confined(&as_user(&db.url, &roles.app), &roles).await;

    // Through PgBouncer in transaction pooling, as deployed: the role's settings reach every
    // server connection PgBouncer opens for it.
    let bouncer = pgbouncer_for(&db, &roles);
    let bounced = through(&bouncer, &db.url, &roles.app, "app-secret");
    let via_pool = serve(&db, &roles, &bounced).await;
    full_cycle(&via_pool).await;
    assert_runtime_role_is_confined(&bounced, &roles).await;
    assert_console_is_the_admins(&bouncer, &roles, &bounced).await;

    drop((app, via_pool, bouncer));
    drop(db);
    drop(roles);
}

/// An instance created before the roles existed: the superuser ran the migrations and owns
/// every table. The role SQL hands the schema to the owner, the service then runs as the
/// runtime role, and a table a later migration adds is granted by the default privileges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_migrated_by_the_superuser_gets_the_roles() {
    let roles = Roles::new();
    let db = Arc::new(TestDatabase::new(Backend::Postgres).await);
    let before = TestApp::start(db.clone(), &[]).await;
    before.link("https://example.com/old").await;
    drop(before);

    roles.apply(&db.url).await;
    assert_owner_owns_everything(&db.url, &roles).await;
    let app = serve(&db, &roles, &as_user(&db.url, &roles.app)).await;
    full_cycle(&app).await;
    let links = app.get_json("/urls").await;
    assert!(
        links.to_string().contains("https://example.com/old"),
        "{links}"
    );
    assert_runtime_role_is_confined(&as_user(&db.url, &roles.app), &roles).await;

    // A later migration, run as the owner, creates a table: the runtime role may use it.
    let mut owner = PgConnection::connect(&as_user(&db.url, &roles.owner))
        .await
        .unwrap();
    owner
        .execute(
            "CREATE TABLE later (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text)",
        )
        .await
        .unwrap();
    let mut runtime = PgConnection::connect(&as_user(&db.url, &roles.app))
        .await
        .unwrap();
    runtime
        .execute("INSERT INTO later (note) VALUES ('granted by default')")
        .await
        .unwrap();
    let err = runtime
        .execute("DROP TABLE later")
        .await
        .expect_err("the runtime role dropped a table");
    assert!(err.to_string().contains("must be owner"), "{err}");

    drop((app, owner, runtime));
    drop(db);
    drop(roles);
}
