//! Which database errors mean "not now" rather than "never": the database
//! (or the pooler in front of it) is restarting, overloaded, unreachable, or
//! refused this transaction for reasons that retrying resolves. Such errors
//! become [`StoreError::Unavailable`](super::StoreError::Unavailable): the
//! API answers 503 with `Retry-After`, and the click writer keeps the batch
//! and retries it instead of dropping it.
//!
//! A pure function of what the server said (SQLSTATE and message), so it is
//! tested as one.

/// SQLSTATE classes (first two characters) that are transient as a whole.
const TRANSIENT_CLASSES: &[&str] = &[
    // connection_exception: the connection failed or was lost.
    "08", // insufficient_resources: too many connections, out of memory or disk.
    "53",
];

/// Single SQLSTATEs that are transient.
const TRANSIENT_CODES: &[&str] = &[
    // admin_shutdown, crash_shutdown, cannot_connect_now (starting up,
    // shutting down, in recovery).
    "57P01", "57P02", "57P03",
    // query_canceled: a statement timeout (or a cancel) stopped this
    // statement; the same statement may finish next time.
    "57014", // serialization_failure, deadlock_detected: the transaction lost a race.
    "40001", "40P01", // lock_not_available (NOWAIT, lock_timeout).
    "55P03",
    // SQLite: SQLITE_BUSY, SQLITE_LOCKED, SQLITE_BUSY_RECOVERY,
    // SQLITE_BUSY_SNAPSHOT, SQLITE_LOCKED_SHAREDCACHE (the extended codes
    // sqlx reports as the code).
    "5", "6", "261", "517", "262",
];

/// What PgBouncer says when it (not PostgreSQL) refuses or ends a client's
/// work because the server side is unavailable or saturated. PgBouncer
/// sends most of its own errors with SQLSTATE 08P01, whatever the cause,
/// and a few without a meaningful code, so its messages are matched too.
/// Lower case; matched as substrings of the lower-cased message.
const POOLER_MESSAGES: &[&str] = &[
    // Login to PostgreSQL failed recently; the cached error is repeated
    // until `server_login_retry` passes.
    "server login has been failing",
    // A client waited `query_wait_timeout` for a server connection.
    "query_wait_timeout",
    // `max_client_conn` or `max_db_connections`/`max_user_connections`.
    "no more connections allowed",
    "pgbouncer cannot connect to server",
    // The server connection died under a running transaction.
    "server conn crashed",
    "server closed the connection unexpectedly",
    // `client_login_timeout` while the server was down.
    "client_login_timeout",
    // PgBouncer itself shutting down or pausing for a restart.
    "pgbouncer is shutting down",
    "pooler is shutting down",
    "database is paused",
    "server_connect_timeout",
    // PostgreSQL's own words, for any path that loses the SQLSTATE.
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "the database system is not accepting connections",
    "terminating connection due to administrator command",
    "sorry, too many clients already",
];

/// Whether an error the database (or PgBouncer) returned with this
/// SQLSTATE and message is transient.
pub fn is_transient(code: Option<&str>, message: &str) -> bool {
    if let Some(code) = code {
        if TRANSIENT_CODES.contains(&code) {
            return true;
        }
        // A five-character SQLSTATE (SQLite's codes are numbers and never
        // match a class: "53" is not a SQLite code).
        if code.len() == 5
            && TRANSIENT_CLASSES
                .iter()
                .any(|class| code.starts_with(class))
        {
            return true;
        }
    }
    let message = message.to_ascii_lowercase();
    POOLER_MESSAGES.iter().any(|known| message.contains(known))
}

/// Whether a sqlx error is transient: I/O, TLS, pool and protocol failures
/// (the connection is gone or unusable; a new one may work), and database
/// errors [`is_transient`] says are.
pub fn is_transient_error(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => is_transient(db.code().as_deref(), db.message()),
        _ => false,
    }
}

/// SQLSTATEs of a refused login: invalid_password (also what PostgreSQL answers for a role
/// that does not exist, under password authentication) and
/// invalid_authorization_specification (no such role, no `pg_hba.conf` entry). Never
/// transient in general; worth waiting out only where the role is known to be on its way.
const LOGIN_REFUSED: &[&str] = &["28P01", "28000"];

/// Whether the server refused the login.
pub fn is_login_refused(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| LOGIN_REFUSED.contains(&code.as_ref())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_login_is_not_transient() {
        for code in LOGIN_REFUSED {
            assert!(!is_transient(Some(code), "password authentication failed"));
        }
    }

    #[test]
    fn connection_loss_and_shutdowns_are_transient() {
        for code in ["08000", "08003", "08006", "08001", "08004", "08P01"] {
            assert!(is_transient(Some(code), "x"), "{code}");
        }
        for code in ["57P01", "57P02", "57P03"] {
            assert!(is_transient(Some(code), "x"), "{code}");
        }
        assert!(is_transient(
            Some("57P03"),
            "the database system is starting up"
        ));
    }

    #[test]
    fn overload_races_locks_and_timeouts_are_transient() {
        for code in ["53000", "53100", "53200", "53300", "53400"] {
            assert!(is_transient(Some(code), "x"), "{code}");
        }
        for code in ["40001", "40P01", "55P03", "57014"] {
            assert!(is_transient(Some(code), "x"), "{code}");
        }
    }

    #[test]
    fn pgbouncer_errors_are_transient_by_message() {
        let seen = [
            "server login has been failing, cached error: the database system is shutting down (server_login_retry)",
            "server login has been failing, cached error: connect failed (server_login_retry)",
            "query_wait_timeout",
            "no more connections allowed (max_client_conn)",
            "pgbouncer cannot connect to server",
            "server conn crashed?",
            "client_login_timeout (server down)",
        ];
        for message in seen {
            assert!(is_transient(Some("08P01"), message), "{message}");
            // Even when the code is lost or unusual.
            assert!(is_transient(None, message), "{message}");
            assert!(is_transient(Some("XX000"), message), "{message}");
        }
    }

    #[test]
    fn sqlite_busy_and_locked_are_transient() {
        for code in ["5", "6", "261", "517", "262"] {
            assert!(is_transient(Some(code), "database is locked"), "{code}");
        }
    }

    #[test]
    fn errors_of_the_request_itself_are_not() {
        let permanent = [
            ("23505", "duplicate key value violates unique constraint"),
            ("23503", "insert or update violates foreign key constraint"),
            ("42P01", "relation \"events\" does not exist"),
            ("42601", "syntax error at or near"),
            ("22P02", "invalid input syntax for type bigint"),
            ("XX000", "internal error"),
            // SQLite's numeric codes are not SQLSTATE classes.
            ("1", "no such table: events"),
            ("19", "UNIQUE constraint failed"),
            ("53", "not a SQLSTATE"),
        ];
        for (code, message) in permanent {
            assert!(!is_transient(Some(code), message), "{code} {message}");
        }
        assert!(!is_transient(None, "no such table"));
    }

    #[test]
    fn connection_level_sqlx_errors_are_transient() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(is_transient_error(&sqlx::Error::Io(io)));
        assert!(is_transient_error(&sqlx::Error::PoolTimedOut));
        assert!(is_transient_error(&sqlx::Error::PoolClosed));
        assert!(is_transient_error(&sqlx::Error::Protocol("eof".into())));
        assert!(!is_transient_error(&sqlx::Error::RowNotFound));
        assert!(!is_transient_error(&sqlx::Error::ColumnNotFound(
            "x".into()
        )));
    }
}
