//! The facts of the stack that more than one component needs: the ports
//! each part listens on, the database and its roles, and the uids the
//! images run as. Components take them from here, never from each other.

pub const HTTP_PORT: i32 = 8080;
/// uid of the distroless `nonroot` user the app image runs as.
pub const APP_UID: i64 = 65532;
pub const DATABASE_NAME: &str = "shortener";
/// The embedded PostgreSQL's superuser (`POSTGRES_USER`). Only the role-setup Job logs in as
/// it; the service uses [`OWNER_ROLE`] for migrations and [`APP_ROLE`] for requests.
pub const SUPERUSER: &str = "shortener";
pub const PGBOUNCER_PORT: i32 = 6432;
/// uid of the `postgres` user in the Alpine-based PgBouncer image.
pub const PGBOUNCER_UID: i64 = 70;
pub const POSTGRES_PORT: i32 = 5432;
/// uid/gid of the `postgres` user in the official Debian-based image.
pub const POSTGRES_UID: i64 = 999;
pub const REDIS_PORT: i32 = 6379;
/// Key of the generated Secret holding the `requirepass` line the server includes.
pub const REDIS_AUTH_CONF_KEY: &str = "auth.conf";
/// uid of the `redis` user in the official Alpine image.
pub const REDIS_UID: i64 = 999;
/// Owns the schema and runs the migrations.
pub const OWNER_ROLE: &str = "shortener_owner";
/// Serves the requests: rows only.
pub const APP_ROLE: &str = "shortener_app";
/// PgBouncer's console user (`admin_users`, `stats_users`); exists in PgBouncer only.
pub const PGBOUNCER_ADMIN: &str = "pgbouncer_admin";
