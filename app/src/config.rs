//! Configuration, from the environment (12-factor) or the equivalent flags.
//! Every value is validated before anything starts; a bad one stops the
//! process with a message naming the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Management endpoints need `Authorization: Bearer <key>`.
    ApiKey,
    /// No authentication (demos, compatibility suites).
    Open,
}

/// Which requests get an access-log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccessLog {
    /// Every request.
    All,
    /// 4xx, 5xx and requests slower than a second (the ingress logs the
    /// rest; a line per redirect would cost more than the redirect).
    Errors,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Apply pending migrations at start (over MIGRATION_DATABASE_URL when given). `false`:
    /// change nothing, and refuse to start unless every migration of this build has been
    /// applied (by `shortener migrate`); the runtime role then needs no DDL rights.
    #[arg(long, env = "MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,

    /// Redis for the shared cache (`redis://…`); optional.
    #[arg(long, env = "REDIS_URL", value_parser = starting_with(&["redis://", "rediss://"]))]
    pub redis_url: Option<String>,

    #[command(flatten)]
    pub cache: CacheSettings,

    #[command(flatten)]
    pub clicks: ClickSettings,

    /// `api-key` (default) or `open`.
    #[arg(long, env = "AUTH_MODE", value_enum, default_value = "api-key")]
    pub auth_mode: AuthMode,

    /// The admin API key (at least 16 characters). Kept only as a hash.
    #[arg(long, env = "ADMIN_API_KEY", hide_env_values = true)]
    pub admin_api_key: Option<String>,

    /// Seconds a replica takes an accepted API key on trust before looking
    /// it up again (which also records its use). With Redis a revocation
    /// reaches every replica at once; without it, within this time.
    #[arg(long, env = "KEY_TRUST_SECS", default_value = "5", value_parser = seconds(1..=3600))]
    pub key_trust_secs: Duration,

    #[command(flatten)]
    pub limits: RateLimitSettings,

    /// Accept targets whose host is `localhost` or an IP literal in a
    /// loopback, private, link-local (cloud metadata) or shared range.
    #[arg(long, env = "ALLOW_PRIVATE_TARGETS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_private_targets: bool,

    /// Domains refused as targets, with all their subdomains
    /// (comma-separated).
    #[arg(long, env = "DENIED_TARGET_DOMAINS", value_delimiter = ',', value_parser = parse_domain)]
    pub denied_target_domains: Vec<String>,

    /// Base of the `short_url` returned by `POST /shorten`, e.g.
    /// `https://sho.rt`. Defaults to the request's Host.
    #[arg(long, env = "PUBLIC_BASE_URL", value_parser = parse_base_url)]
    pub public_base_url: Option<String>,

    /// Longest a request may take before it is answered with 503.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value = "10", value_parser = seconds(1..=300))]
    pub request_timeout_secs: Duration,

    /// Seconds a client may take to send a request's headers; a slower one
    /// is disconnected (one idle socket per slow client is all it costs).
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value = "10", value_parser = seconds(1..=300))]
    pub header_read_timeout_secs: Duration,

    /// Seconds to finish in-flight requests after SIGTERM.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value = "20", value_parser = seconds(0..=600))]
    pub shutdown_grace_secs: Duration,

    /// Access log: `all`, `errors` (default: 4xx, 5xx, slow) or `off`.
    #[arg(long, env = "ACCESS_LOG", value_enum, default_value = "errors")]
    pub access_log: AccessLog,

    /// `json` (default) or `text`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub traces: TraceSettings,
}

impl ServeConfig {
    /// Checks that need more than one value, or must not echo the value
    /// (clap prints a rejected value; a rejected secret must not be printed).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(key) = &self.admin_api_key {
            check_api_key(key).map_err(|e| format!("ADMIN_API_KEY {e}"))?;
        }
        Ok(())
    }

    /// The configuration `shortener serve FLAGS…` would run with, reading
    /// no environment variable: every default comes from the one place
    /// `serve` takes it from. For embedding and tests.
    pub fn from_flags<I, T>(flags: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory as _, FromArgMatches as _};
        // A later flag wins over an earlier one, as in a shell wrapper.
        let command = Flags::command()
            .args_override_self(true)
            .mut_args(|arg| arg.env(None));
        let flags = std::iter::once(std::ffi::OsString::from("serve"))
            .chain(flags.into_iter().map(Into::into));
        let config = Flags::from_arg_matches(&command.try_get_matches_from(flags)?)?.config;
        config.validate().map_err(|problem| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, problem)
        })?;
        Ok(config)
    }
}

/// [`ServeConfig`] as a command of its own, for [`ServeConfig::from_flags`].
#[derive(clap::Parser)]
struct Flags {
    #[command(flatten)]
    config: ServeConfig,
}

#[derive(Debug, Clone, Args)]
pub struct CacheSettings {
    /// Entries kept in each replica's in-process cache.
    #[arg(long, env = "CACHE_CAPACITY", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub cache_capacity: u64,

    /// Bytes the in-process cache may take (each entry weighed by its code,
    /// its target and a fixed overhead): long targets cannot grow it past
    /// this, whatever their number.
    #[arg(long, env = "CACHE_MAX_BYTES", default_value_t = 32 << 20, value_parser = clap::value_parser!(u64).range(0..=1 << 40))]
    pub cache_max_bytes: u64,

    /// Seconds an in-process entry may be served without news of a change
    /// (changes normally arrive at once over Redis; this bounds a missed one).
    #[arg(long, env = "LOCAL_CACHE_TTL_SECONDS", default_value = "30", value_parser = seconds(1..=86_400))]
    pub local_cache_ttl_seconds: Duration,

    /// Seconds an entry lives in Redis.
    #[arg(long, env = "CACHE_TTL_SECONDS", default_value = "300", value_parser = seconds(1..=604_800))]
    pub cache_ttl_seconds: Duration,

    /// Seconds "no such short code" is remembered in process.
    #[arg(long, env = "NEGATIVE_CACHE_TTL_SECONDS", default_value = "5", value_parser = seconds(1..=3_600))]
    pub negative_cache_ttl_seconds: Duration,

    /// Seconds an in-process copy of a link may still be served when
    /// neither Redis nor the database can answer (stale-if-error, answered
    /// with `X-Cache: STALE`); 0 turns it off.
    #[arg(long, env = "STALE_IF_ERROR_SECS", default_value = "3600", value_parser = seconds(0..=86_400))]
    pub stale_if_error_secs: Duration,

    /// Most recent active URLs loaded into the caches at start.
    #[arg(long, env = "CACHE_WARM_ENTRIES", default_value_t = 10_000, value_parser = clap::value_parser!(i64).range(0..=1_000_000))]
    pub cache_warm_entries: i64,

    /// Prefix of every Redis key and channel: installations sharing one
    /// Redis must use different prefixes.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = DEFAULT_REDIS_KEY_PREFIX, value_parser = parse_key_prefix)]
    pub redis_key_prefix: String,

    /// Milliseconds a Redis call may take before the database is asked
    /// instead.
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value = "50", value_parser = clap::value_parser!(u64).range(1..=10_000).map(Duration::from_millis))]
    pub redis_timeout_ms: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ClickSettings {
    /// Most clicks written in one INSERT.
    #[arg(long, env = "CLICK_BATCH_MAX", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000).map(as_usize))]
    pub click_batch_max: usize,

    /// Clicks that may queue for the writer before redirects wait.
    #[arg(long, env = "CLICK_QUEUE_CAPACITY", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(as_usize))]
    pub click_queue_capacity: usize,

    /// Clicks kept (on disk, in DATA_DIR/clicks.spill, and in memory) while
    /// the database is unavailable; beyond it new clicks are dropped and
    /// counted.
    #[arg(long, env = "CLICK_SPILL_CAPACITY", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(0..=10_000_000).map(as_usize))]
    pub click_spill_capacity: usize,

    /// Bytes the spill file may take (about 100 bytes a click).
    #[arg(long, env = "CLICK_SPILL_MAX_BYTES", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(4096..=1 << 40))]
    pub click_spill_max_bytes: u64,

    /// Milliseconds a click write may take; past it the batch is spilled
    /// and its redirects answered.
    #[arg(long, env = "CLICK_WRITE_TIMEOUT_MS", default_value = "2000", value_parser = clap::value_parser!(u64).range(10..=60_000).map(Duration::from_millis))]
    pub click_write_timeout_ms: Duration,

    /// Click batches written at once (PostgreSQL; SQLite always writes one
    /// at a time). Each holds a database connection while it writes.
    #[arg(long, env = "CLICK_WRITERS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64).map(as_usize))]
    pub click_writers: usize,
}

/// Rate limits per class, and who may name the client. With Redis they
/// hold across all replicas; without it (or while it is away) each replica
/// applies them on its own. Each limit is a sustained rate per minute and a
/// burst (requests allowed at once); a rate of 0 turns that class off.
#[derive(Debug, Clone, Args)]
pub struct RateLimitSettings {
    /// Management requests per minute per client (or API key); 0 = off.
    #[arg(long, env = "RATE_LIMIT_PER_MINUTE", default_value_t = 600, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub rate_limit_per_minute: u32,

    /// Management requests a client may make at once above the sustained
    /// rate.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate_limit_burst: u32,

    /// Creations (`POST /urls`, `/shorten`, `/users`, `/users/bulk`) per
    /// minute per client (or API key); 0 = off. Counted instead of the
    /// management limit for those requests.
    #[arg(long, env = "CREATE_RATE_LIMIT_PER_MINUTE", default_value_t = 60, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub create_rate_limit_per_minute: u32,

    /// Creations a client may make at once above the sustained rate.
    #[arg(long, env = "CREATE_RATE_LIMIT_BURST", default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub create_rate_limit_burst: u32,

    /// Redirect misses (404 after a lookup beyond the in-process cache) per
    /// minute per client IP; past it, lookups beyond the in-process cache
    /// are answered 429 (cached links keep redirecting); 0 = off.
    #[arg(long, env = "REDIRECT_MISS_LIMIT_PER_MINUTE", default_value_t = 60, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub redirect_miss_limit_per_minute: u32,

    /// Redirect misses a client may cause at once above the sustained rate.
    #[arg(long, env = "REDIRECT_MISS_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub redirect_miss_burst: u32,

    /// Networks of the proxies in front of the service (comma-separated
    /// CIDRs, e.g. `10.0.0.0/8,fd00::/8`). `X-Forwarded-For` (the right-most
    /// address outside these networks) and `X-Real-IP` name the client
    /// only when the TCP peer is inside one of them. Empty (the default):
    /// the peer is the client, and those headers are ignored.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_network)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Replaced by TRUSTED_PROXIES: accepted so that old deployments
    /// start, but ignored (it trusted `X-Real-IP` from anyone).
    #[arg(long, env = "TRUST_PROXY_HEADERS", hide = true, action = clap::ArgAction::Set)]
    pub trust_proxy_headers: Option<bool>,
}

/// A CIDR network, or a single address (a /32 or /128).
fn parse_network(raw: &str) -> Result<ipnet::IpNet, String> {
    let raw = raw.trim();
    raw.parse::<ipnet::IpNet>()
        .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| "must be a CIDR network such as 10.0.0.0/8 or an IP address".into())
}

/// The ranges above fit any `usize` this builds for; saturate regardless.
fn as_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Whole seconds within `range`, as a duration.
fn seconds(
    range: std::ops::RangeInclusive<u64>,
) -> impl clap::builder::TypedValueParser<Value = Duration> {
    clap::value_parser!(u64)
        .range(range)
        .map(Duration::from_secs)
}

/// Trace export over OTLP/HTTP with protobuf bodies: off unless an endpoint
/// is set. The variables are OpenTelemetry's standard ones.
#[derive(Debug, Clone, Args)]
pub struct TraceSettings {
    /// Base URL of an OTLP/HTTP collector (`http://otel-collector:4318`);
    /// traces go to `<base>/v1/traces`. Unset: no traces are exported.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = parse_otlp_endpoint)]
    pub otel_exporter_otlp_endpoint: Option<String>,

    /// The full URL traces are sent to; overrides OTEL_EXPORTER_OTLP_ENDPOINT.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", value_parser = parse_otlp_endpoint)]
    pub otel_exporter_otlp_traces_endpoint: Option<String>,

    /// Only `http/protobuf` is built in (no gRPC).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", default_value = "http/protobuf", value_parser = ["http/protobuf"])]
    pub otel_exporter_otlp_protocol: String,

    /// `service.name` of every exported span.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "shortener", value_parser = parse_service_name)]
    pub otel_service_name: String,

    /// Which traces are kept; the `parentbased_*` samplers follow the
    /// caller's decision in an incoming `traceparent`.
    #[arg(
        long,
        env = "OTEL_TRACES_SAMPLER",
        value_enum,
        default_value = "parentbased_traceidratio"
    )]
    pub otel_traces_sampler: TraceSampler,

    /// The ratio of the `*traceidratio` samplers, 0 to 1.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", default_value_t = 1.0, value_parser = parse_ratio)]
    pub otel_traces_sampler_arg: f64,
}

impl TraceSettings {
    /// Where spans are posted, or `None` when export is off.
    pub fn traces_url(&self) -> Option<String> {
        if let Some(url) = &self.otel_exporter_otlp_traces_endpoint {
            return Some(url.clone());
        }
        let base = self.otel_exporter_otlp_endpoint.as_deref()?;
        Some(format!("{}/v1/traces", base.trim_end_matches('/')))
    }
}

/// `OTEL_TRACES_SAMPLER` values (the standard names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TraceSampler {
    #[value(name = "always_on")]
    AlwaysOn,
    #[value(name = "always_off")]
    AlwaysOff,
    #[value(name = "traceidratio")]
    TraceIdRatio,
    #[value(name = "parentbased_always_on")]
    ParentBasedAlwaysOn,
    #[value(name = "parentbased_always_off")]
    ParentBasedAlwaysOff,
    #[value(name = "parentbased_traceidratio")]
    ParentBasedTraceIdRatio,
}

/// `shortener migrate`: the database of [`DatabaseConfig`], migrated over
/// MIGRATION_DATABASE_URL when given, else DATABASE_URL (or the embedded default).
#[derive(Debug, Clone, Args)]
pub struct MigrateConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Seconds to wait for a database that is not reachable yet (still starting).
    #[arg(long, env = "MIGRATE_WAIT_SECS", default_value = "60", value_parser = seconds(0..=3_600))]
    pub wait_secs: Duration,

    /// Also wait (within MIGRATE_WAIT_SECS) while the login is refused: the role may not
    /// exist yet, as when a setup job creates it next to this run. Off: a refused login is a
    /// wrong password, reported at once.
    #[arg(long, env = "MIGRATE_WAIT_FOR_ROLE", default_value_t = false, action = clap::ArgAction::Set)]
    pub wait_for_role: bool,
}

impl MigrateConfig {
    /// The URL migrations run over (creating the embedded default's data directory).
    pub fn url(&self) -> std::io::Result<String> {
        match &self.database.migration_database_url {
            Some(url) => Ok(url.clone()),
            None => self.database.resolve(),
        }
    }
}

/// The Redis key prefix when `REDIS_KEY_PREFIX` is unset.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "shortener";

/// Where `shortener keys revoke` announces a revocation: the Redis the
/// replicas share, under their prefix.
#[derive(Debug, Clone, Args)]
pub struct RevocationFeed {
    /// The replicas' Redis (`redis://…`); without it, they refuse a revoked
    /// key within `KEY_TRUST_SECS`.
    #[arg(long, env = "REDIS_URL", value_parser = starting_with(&["redis://", "rediss://"]))]
    pub redis_url: Option<String>,

    /// The replicas' `REDIS_KEY_PREFIX`.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = DEFAULT_REDIS_KEY_PREFIX, value_parser = parse_key_prefix)]
    pub redis_key_prefix: String,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// `postgres://…` or `sqlite://…`. Unset: an embedded SQLite file in
    /// DATA_DIR.
    #[arg(long, env = "DATABASE_URL", value_parser = starting_with(&["postgres://", "postgresql://", "sqlite:"]))]
    pub database_url: Option<String>,

    /// A direct PostgreSQL URL for migrations, when DATABASE_URL goes through
    /// PgBouncer in transaction mode (migrations hold a session advisory
    /// lock, which transaction pooling cannot keep).
    #[arg(long, env = "MIGRATION_DATABASE_URL", value_parser = starting_with(&["postgres://", "postgresql://"]))]
    pub migration_database_url: Option<String>,

    /// Where the embedded database lives when DATABASE_URL is unset, and
    /// the click spill file always (one directory per replica).
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Connections per replica to PostgreSQL (or PgBouncer).
    #[arg(long = "database-pool-size", value_name = "DATABASE_POOL_SIZE", env = "DATABASE_POOL_SIZE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub pool_size: u32,
}

impl DatabaseConfig {
    /// The URL to connect to, creating the data directory for the embedded
    /// default.
    pub fn resolve(&self) -> std::io::Result<String> {
        match &self.database_url {
            Some(url) => Ok(url.clone()),
            None => {
                std::fs::create_dir_all(&self.data_dir)?;
                Ok(format!(
                    "sqlite://{}",
                    self.data_dir.join("shortener.db").display()
                ))
            }
        }
    }
}

/// A value that starts with one of `prefixes` (a URL of an accepted scheme).
fn starting_with(
    prefixes: &'static [&'static str],
) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |raw: &str| {
        if prefixes.iter().any(|p| raw.starts_with(p)) {
            Ok(raw.to_owned())
        } else {
            Err(format!("must start with {}", prefixes.join(" or ")))
        }
    }
}

fn parse_domain(raw: &str) -> Result<String, String> {
    let domain = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(domain)
    } else {
        Err("must be a domain name such as evil.example".into())
    }
}

fn parse_key_prefix(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err("must be 1 to 64 of letters, digits, '-', '_', '.', ':'".into())
    }
}

/// An `http://` URL with a host and no query: the exporter speaks plain
/// HTTP to a collector (a sidecar, a node agent or an in-cluster service);
/// TLS to an outside backend is the collector's job.
fn parse_otlp_endpoint(raw: &str) -> Result<String, String> {
    match url::Url::parse(raw) {
        Ok(u)
            if u.scheme() == "http"
                && u.host_str().is_some()
                && u.query().is_none()
                && u.fragment().is_none() =>
        {
            Ok(raw.to_owned())
        }
        Ok(u) if u.scheme() == "https" => Err(
            "must be an http:// URL: this build exports to a collector over plain HTTP (no TLS)"
                .into(),
        ),
        _ => Err("must be an http:// URL such as http://otel-collector:4318".into()),
    }
}

fn parse_service_name(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() || raw.len() > 255 {
        Err("must be 1 to 255 characters".into())
    } else {
        Ok(raw.to_owned())
    }
}

fn parse_ratio(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err("must be a number from 0 to 1".into()),
    }
}

fn check_api_key(key: &str) -> Result<(), String> {
    if key.len() < 16 || key.chars().any(char::is_whitespace) {
        Err("must be at least 16 characters with no whitespace".into())
    } else {
        Ok(())
    }
}

fn parse_base_url(raw: &str) -> Result<String, String> {
    match url::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            Ok(raw.trim_end_matches('/').to_owned())
        }
        _ => Err("must be an absolute http(s) URL such as https://sho.rt".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traces(endpoint: Option<&str>, traces_endpoint: Option<&str>) -> TraceSettings {
        TraceSettings {
            otel_exporter_otlp_endpoint: endpoint.map(str::to_owned),
            otel_exporter_otlp_traces_endpoint: traces_endpoint.map(str::to_owned),
            otel_exporter_otlp_protocol: "http/protobuf".into(),
            otel_service_name: "shortener".into(),
            otel_traces_sampler: TraceSampler::ParentBasedTraceIdRatio,
            otel_traces_sampler_arg: 1.0,
        }
    }

    #[test]
    fn the_traces_url_follows_the_otlp_rules() {
        assert_eq!(traces(None, None).traces_url(), None);
        assert_eq!(
            traces(Some("http://c:4318"), None).traces_url().as_deref(),
            Some("http://c:4318/v1/traces")
        );
        assert_eq!(
            traces(Some("http://c:4318/otlp/"), None)
                .traces_url()
                .as_deref(),
            Some("http://c:4318/otlp/v1/traces")
        );
        // The signal's own URL is used as it is, and wins.
        assert_eq!(
            traces(Some("http://c:4318"), Some("http://t:9999/custom"))
                .traces_url()
                .as_deref(),
            Some("http://t:9999/custom")
        );
    }

    #[test]
    fn trusted_proxies_are_networks_or_addresses() {
        assert_eq!(
            parse_network("10.1.2.3/8").map(|n| n.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(
            parse_network(" 192.0.2.1 ").map(|n| n.to_string()),
            Ok("192.0.2.1/32".into())
        );
        assert_eq!(
            parse_network("fd00::/8").map(|n| n.to_string()),
            Ok("fd00::/8".into())
        );
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("ingress-nginx").is_err());
    }

    #[test]
    fn rate_limits_are_on_by_default_and_trust_nobody() {
        let config = ServeConfig::from_flags(Vec::<String>::new()).expect("defaults parse");
        let limits = &config.limits;
        assert!(limits.rate_limit_per_minute > 0);
        assert!(limits.create_rate_limit_per_minute > 0);
        assert!(limits.create_rate_limit_per_minute < limits.rate_limit_per_minute);
        assert!(limits.redirect_miss_limit_per_minute > 0);
        assert!(limits.trusted_proxies.is_empty());
        let config = ServeConfig::from_flags(["--trusted-proxies", "10.0.0.0/8,127.0.0.1"])
            .expect("a list parses");
        assert_eq!(config.limits.trusted_proxies.len(), 2);
    }

    #[test]
    fn serve_migrates_at_start_unless_told_not_to() {
        let config = ServeConfig::from_flags(Vec::<String>::new()).expect("defaults parse");
        assert!(config.migrate_on_start);
        let config = ServeConfig::from_flags(["--migrate-on-start", "false"]).expect("parses");
        assert!(!config.migrate_on_start);
    }

    #[test]
    fn otlp_endpoints_are_plain_http_urls() {
        assert!(parse_otlp_endpoint("http://otel-collector:4318").is_ok());
        assert!(parse_otlp_endpoint("https://otel-collector:4318").is_err());
        assert!(parse_otlp_endpoint("otel-collector:4318").is_err());
        assert!(parse_otlp_endpoint("http://c:4318/?x=1").is_err());
        assert_eq!(parse_ratio("0.25"), Ok(0.25));
        assert!(parse_ratio("-0.1").is_err() && parse_ratio("NaN").is_err());
    }
}
