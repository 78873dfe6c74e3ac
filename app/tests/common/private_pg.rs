//! A PostgreSQL cluster and a PgBouncer of a test's own, on free ports, so
//! that the test may restart and stop them (the shared test services must
//! never be). Both run as the `postgres` user (neither runs as root), from
//! a temporary directory; Drop stops them and removes it, pass or fail.
//!
//! Made as `scripts/services.sh` makes its private cluster and
//! `scripts/pgbouncer.sh` its PgBouncer (transaction pooling, named
//! prepared statements kept by `max_prepared_statements`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::server::free_port;

fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL binaries under /usr/lib/postgresql (scripts/services.sh installs them)")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    versions.pop().unwrap().join("bin").join(name)
}

/// `command` as the postgres user (the test runs as root).
fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
        .arg(program);
    command
}

fn chown_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "chown {}", path.display());
}

pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
}

impl PrivatePostgres {
    /// initdb into a temporary directory and start on a free port.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("shortener-pg")
            .tempdir()
            .unwrap();
        chown_postgres(dir.path());
        let data = dir.path().join("data");
        let out = as_postgres(&pg_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Self {
            port: free_port(),
            dir,
        };
        pg.pg_ctl_start();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100",
            self.port,
            self.dir.path().display()
        );
        as_postgres(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &options])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn pg_ctl_start(&self) {
        let out = self.pg_ctl(&["-w", "start"]);
        assert!(out.status.success(), "pg_ctl start: {}", self.log());
    }

    /// `pg_ctl restart -m fast`: every session is ended, the server comes
    /// back.
    pub fn restart_fast(&self) {
        let out = self.pg_ctl(&["-w", "-m", "fast", "restart"]);
        assert!(out.status.success(), "pg_ctl restart: {}", self.log());
    }

    pub fn stop_fast(&self) {
        let out = self.pg_ctl(&["-w", "-m", "fast", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {}", self.log());
    }

    pub fn start_again(&self) {
        self.pg_ctl_start();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `psql -tAc sql` on `database`, directly: one value.
    pub fn query(&self, database: &str, sql: &str) -> String {
        let out = Command::new(pg_bin("psql"))
            .arg(self.url(database))
            .args(["-tAc", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn create_database(&self, name: &str) {
        self.query("postgres", &format!("CREATE DATABASE {name}"));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}

/// Where `scripts/pgbouncer.sh build` leaves PgBouncer.
fn pgbouncer_binary() -> PathBuf {
    let cache = std::env::var_os("SHORTENER_STACK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(".cache/shortener-stack")
        });
    let bin = cache.join("pgbouncer/bin/pgbouncer");
    assert!(
        bin.exists(),
        "PgBouncer at {} is needed (scripts/pgbouncer.sh build)",
        bin.display()
    );
    bin
}

pub struct PrivatePgBouncer {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl PrivatePgBouncer {
    /// Transaction pooling in front of `pg`, every database name, PgBouncer's
    /// defaults otherwise (`server_login_retry` 15 s, `query_wait_timeout`
    /// 120 s), as production runs it.
    pub fn start(pg: &PrivatePostgres) -> Self {
        Self::in_front_of(pg.port, "\"postgres\" \"\"\n", "auth_type = trust\n")
    }

    /// The same in front of the PostgreSQL on `pg_port`, with this
    /// `userlist.txt` and these authentication settings (`auth_type`,
    /// `admin_users`, ...), as the operator configures them.
    pub fn in_front_of(pg_port: u16, userlist: &str, auth: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("shortener-pgbouncer")
            .tempdir()
            .unwrap();
        // The binary's cache is under root's home, which postgres cannot
        // read: a copy of its own.
        let bin = dir.path().join("pgbouncer");
        std::fs::copy(pgbouncer_binary(), &bin).unwrap();
        let port = free_port();
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(dir.path().join("userlist.txt"), userlist).unwrap();
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host=127.0.0.1 port={pg_port}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 {auth}auth_file = {dir}/userlist.txt\n\
                 pool_mode = transaction\ndefault_pool_size = 10\nmax_client_conn = 200\n\
                 max_prepared_statements = 200\nserver_reset_query = DISCARD ALL\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 logfile = {dir}/pgbouncer.log\n",
                dir = dir.path().display(),
            ),
        )
        .unwrap();
        chown_postgres(dir.path());
        let child = as_postgres(&bin)
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let bouncer = Self { port, child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "PgBouncer: {}", bouncer.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        bouncer
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PrivatePgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
