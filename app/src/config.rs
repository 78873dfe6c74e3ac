//! Configuration, from the environment (12-factor) or the equivalent flags.
//! Every value is validated before anything starts; a bad one stops the
//! process with a message naming the variable.
//!
//! Each argument's variable, default, range and help belong to the settings
//! description (crate `shortener-settings`), which the operator's Shortener
//! schema is derived from too: [`described`] gives them to the command line,
//! and the types here only say what each value becomes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{RangedU64ValueParser, TypedValueParser as _};
use clap::{Args, ValueEnum};
use shortener_settings::{self as settings, Kind, Setting};

/// `command` with every argument that is a service setting given its
/// variable, default and help from the settings description (in every
/// subcommand too). Arguments that are not settings are left as they are.
pub fn described(command: clap::Command) -> clap::Command {
    command.mut_args(describe).mut_subcommands(described)
}

fn describe(arg: clap::Arg) -> clap::Arg {
    let Some(setting) = arg.get_long().and_then(Setting::by_flag) else {
        return arg;
    };
    // The value is named by its variable, so that a refusal names what to fix.
    let mut arg = arg
        .env(setting.env)
        .value_name(setting.env)
        .help(setting.help);
    if let Some(default) = setting.default_value() {
        arg = arg.default_value(default).required(false);
    }
    match setting.kind {
        Kind::Secret => arg.hide_env_values(true),
        Kind::Replaced { .. } => arg.hide(true),
        _ => arg,
    }
}

/// The bounds of an integer setting. The description is constant: a
/// setting parsed as a number that is not one is a defect every test of the
/// command line finds.
fn bounds(setting: &Setting) -> std::ops::RangeInclusive<u64> {
    match setting.kind {
        Kind::Integer { min, max, .. } => min..=max,
        _ => panic!("{} is not described as an integer", setting.env),
    }
}

/// A whole number within the setting's bounds.
fn integer(setting: &Setting) -> RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(bounds(setting))
}

/// As [`integer`], for settings whose bounds fit a `u32`.
fn small(setting: &Setting) -> impl clap::builder::TypedValueParser<Value = u32> {
    integer(setting).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// As [`integer`], a count of things held in memory.
fn count(setting: &Setting) -> impl clap::builder::TypedValueParser<Value = usize> {
    integer(setting).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Whole seconds within the setting's bounds, as a duration.
fn seconds(setting: &Setting) -> impl clap::builder::TypedValueParser<Value = Duration> {
    integer(setting).map(Duration::from_secs)
}

/// Milliseconds within the setting's bounds, as a duration.
fn millis(setting: &Setting) -> impl clap::builder::TypedValueParser<Value = Duration> {
    integer(setting).map(Duration::from_millis)
}

/// One of the setting's choices.
fn choices(setting: &Setting) -> clap::builder::PossibleValuesParser {
    match setting.kind {
        Kind::Choice { choices, .. } => choices.into(),
        _ => panic!("{} is not described as a choice", setting.env),
    }
}

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
    /// No access log. `off` is accepted too (YAML 1.1 readers, kubectl's
    /// among them, take an unquoted `off` for `false`).
    #[value(name = "none", alias = "off")]
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[arg(long)]
    pub listen_addr: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseConfig,

    #[arg(long, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,

    #[arg(long, value_parser = starting_with(&["redis://", "rediss://"]))]
    pub redis_url: Option<String>,

    #[command(flatten)]
    pub cache: CacheSettings,

    #[command(flatten)]
    pub clicks: ClickSettings,

    #[arg(long, value_enum)]
    pub auth_mode: AuthMode,

    #[arg(long)]
    pub admin_api_key: Option<String>,

    #[arg(long, value_parser = seconds(&settings::KEY_TRUST_SECS))]
    pub key_trust_secs: Duration,

    #[command(flatten)]
    pub limits: RateLimitSettings,

    #[arg(long, action = clap::ArgAction::Set)]
    pub allow_private_targets: bool,

    #[arg(long, action = clap::ArgAction::Set)]
    pub count_bots: bool,

    #[arg(long, value_delimiter = ',', value_parser = parse_domain)]
    pub denied_target_domains: Vec<String>,

    #[arg(long, value_parser = parse_base_url)]
    pub public_base_url: Option<String>,

    #[arg(long, value_parser = seconds(&settings::REQUEST_TIMEOUT_SECS))]
    pub request_timeout_secs: Duration,

    #[arg(long, value_parser = seconds(&settings::HEADER_READ_TIMEOUT_SECS))]
    pub header_read_timeout_secs: Duration,

    #[arg(long, value_parser = seconds(&settings::SHUTDOWN_GRACE_SECS))]
    pub shutdown_grace_secs: Duration,

    #[arg(long, value_parser = seconds(&settings::SHUTDOWN_DRAIN_SECS))]
    pub shutdown_drain_secs: Duration,

    #[arg(long, value_enum)]
    pub access_log: AccessLog,

    #[arg(long, value_enum)]
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
        let command = described(Flags::command())
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

impl ServeConfig {
    /// The configuration `shortener serve` would run with in an environment
    /// holding exactly `variables` (as a ConfigMap gives them), or why it
    /// would refuse to start. A variable the service does not read is
    /// refused too: a misspelt one would otherwise be ignored.
    pub fn from_variables<'a>(
        variables: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, String> {
        let mut flags = Vec::new();
        for (name, value) in variables {
            let setting = Setting::named(name).ok_or_else(|| format!("{name} is not a setting"))?;
            match setting.read_by {
                settings::ReadBy::Flag => flags.push(format!("--{}={value}", setting.flag())),
                settings::ReadBy::Environment if name == settings::RUST_LOG.env => {
                    tracing_subscriber::EnvFilter::try_new(value)
                        .map_err(|e| format!("RUST_LOG: {e}"))?;
                }
                settings::ReadBy::Environment => {}
            }
        }
        Self::from_flags(flags).map_err(|e| e.to_string())
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
    #[arg(long, value_parser = integer(&settings::CACHE_CAPACITY))]
    pub cache_capacity: u64,

    #[arg(long, value_parser = integer(&settings::CACHE_MAX_BYTES))]
    pub cache_max_bytes: u64,

    #[arg(long, value_parser = seconds(&settings::LOCAL_CACHE_TTL_SECONDS))]
    pub local_cache_ttl_seconds: Duration,

    #[arg(long, value_parser = seconds(&settings::CACHE_TTL_SECONDS))]
    pub cache_ttl_seconds: Duration,

    #[arg(long, value_parser = seconds(&settings::NEGATIVE_CACHE_TTL_SECONDS))]
    pub negative_cache_ttl_seconds: Duration,

    #[arg(long, value_parser = seconds(&settings::STALE_IF_ERROR_SECS))]
    pub stale_if_error_secs: Duration,

    #[arg(long, value_parser = integer(&settings::CACHE_WARM_ENTRIES).map(|n| i64::try_from(n).unwrap_or(i64::MAX)))]
    pub cache_warm_entries: i64,

    #[arg(long, value_parser = parse_key_prefix)]
    pub redis_key_prefix: String,

    #[arg(long, value_parser = millis(&settings::REDIS_TIMEOUT_MS))]
    pub redis_timeout_ms: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ClickSettings {
    #[arg(long, value_parser = count(&settings::CLICK_BATCH_MAX))]
    pub click_batch_max: usize,

    #[arg(long, value_parser = count(&settings::CLICK_QUEUE_CAPACITY))]
    pub click_queue_capacity: usize,

    #[arg(long, value_parser = count(&settings::CLICK_SPILL_CAPACITY))]
    pub click_spill_capacity: usize,

    #[arg(long, value_parser = integer(&settings::CLICK_SPILL_MAX_BYTES))]
    pub click_spill_max_bytes: u64,

    #[arg(long, value_parser = millis(&settings::CLICK_WRITE_TIMEOUT_MS))]
    pub click_write_timeout_ms: Duration,

    #[arg(long, value_parser = count(&settings::CLICK_WRITERS))]
    pub click_writers: usize,
}

/// Rate limits per class, and who may name the client. With Redis they
/// hold across all replicas; without it (or while it is away) each replica
/// applies them on its own. Each limit is a sustained rate per minute and a
/// burst (requests allowed at once); a rate of 0 turns that class off.
#[derive(Debug, Clone, Args)]
pub struct RateLimitSettings {
    #[arg(long, value_parser = small(&settings::RATE_LIMIT_PER_MINUTE))]
    pub rate_limit_per_minute: u32,

    #[arg(long, value_parser = small(&settings::RATE_LIMIT_BURST))]
    pub rate_limit_burst: u32,

    #[arg(long, value_parser = small(&settings::CREATE_RATE_LIMIT_PER_MINUTE))]
    pub create_rate_limit_per_minute: u32,

    #[arg(long, value_parser = small(&settings::CREATE_RATE_LIMIT_BURST))]
    pub create_rate_limit_burst: u32,

    #[arg(long, value_parser = small(&settings::REDIRECT_MISS_LIMIT_PER_MINUTE))]
    pub redirect_miss_limit_per_minute: u32,

    #[arg(long, value_parser = small(&settings::REDIRECT_MISS_BURST))]
    pub redirect_miss_burst: u32,

    #[arg(long, value_parser = small(&settings::LINK_PASSWORD_LIMIT_PER_MINUTE))]
    pub link_password_limit_per_minute: u32,

    #[arg(long, value_parser = small(&settings::LINK_PASSWORD_BURST))]
    pub link_password_burst: u32,

    #[arg(long, value_delimiter = ',', value_parser = parse_network)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    #[arg(long, action = clap::ArgAction::Set)]
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

/// Trace export over OTLP/HTTP with protobuf bodies: off unless an endpoint
/// is set. The variables are OpenTelemetry's standard ones.
#[derive(Debug, Clone, Args)]
pub struct TraceSettings {
    #[arg(long, value_parser = parse_otlp_endpoint)]
    pub otel_exporter_otlp_endpoint: Option<String>,

    #[arg(long, value_parser = parse_otlp_endpoint)]
    pub otel_exporter_otlp_traces_endpoint: Option<String>,

    #[arg(long, value_parser = choices(&settings::OTEL_EXPORTER_OTLP_PROTOCOL))]
    pub otel_exporter_otlp_protocol: String,

    #[arg(long, value_parser = parse_service_name)]
    pub otel_service_name: String,

    #[arg(long, value_enum)]
    pub otel_traces_sampler: TraceSampler,

    #[arg(long, value_parser = parse_ratio)]
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

    #[arg(long = "migrate-wait-secs", value_parser = seconds(&settings::MIGRATE_WAIT_SECS))]
    pub wait_secs: Duration,

    #[arg(long = "migrate-wait-for-role", action = clap::ArgAction::Set)]
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

/// Where `shortener keys revoke` announces a revocation: the Redis the
/// replicas share, under their prefix.
#[derive(Debug, Clone, Args)]
pub struct RevocationFeed {
    #[arg(long, value_parser = starting_with(&["redis://", "rediss://"]))]
    pub redis_url: Option<String>,

    #[arg(long, value_parser = parse_key_prefix)]
    pub redis_key_prefix: String,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    #[arg(long, value_parser = starting_with(&["postgres://", "postgresql://", "sqlite:"]))]
    pub database_url: Option<String>,

    #[arg(long, value_parser = starting_with(&["postgres://", "postgresql://"]))]
    pub migration_database_url: Option<String>,

    #[arg(long)]
    pub data_dir: PathBuf,

    #[arg(long = "database-pool-size", value_parser = small(&settings::DATABASE_POOL_SIZE))]
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

    /// The commands that run the service, as `main` builds them.
    fn commands() -> Vec<clap::Command> {
        use clap::CommandFactory as _;
        #[derive(clap::Parser)]
        struct Migrate {
            #[command(flatten)]
            config: MigrateConfig,
        }
        #[derive(clap::Parser)]
        struct Revoke {
            #[command(flatten)]
            feed: RevocationFeed,
        }
        vec![
            described(Flags::command()),
            described(Migrate::command()),
            described(Revoke::command()),
        ]
    }

    #[test]
    fn every_argument_is_a_described_setting_and_every_setting_an_argument() {
        let mut seen = std::collections::BTreeSet::new();
        for command in commands() {
            for arg in command.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if long == "help" {
                    continue;
                }
                let setting = Setting::by_flag(long)
                    .unwrap_or_else(|| panic!("--{long} is not in the settings description"));
                assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(setting.env));
                if let Kind::Choice { choices, .. } = setting.kind {
                    let values: Vec<String> = arg
                        .get_possible_values()
                        .iter()
                        .map(|v| v.get_name().to_string())
                        .collect();
                    assert_eq!(values, choices, "{}", setting.env);
                }
                seen.insert(setting.env);
            }
        }
        for setting in settings::ALL {
            if setting.read_by == settings::ReadBy::Flag {
                assert!(seen.contains(setting.env), "{} is no argument", setting.env);
            }
        }
    }

    #[test]
    fn integer_settings_take_exactly_their_described_range() {
        for command in commands() {
            for arg in command.get_arguments() {
                let Some(setting) = arg.get_long().and_then(Setting::by_flag) else {
                    continue;
                };
                let Kind::Integer { min, max, .. } = setting.kind else {
                    continue;
                };
                let parse = |value: u64| {
                    command
                        .clone()
                        .try_get_matches_from([
                            "x".to_string(),
                            format!("--{}={value}", setting.flag()),
                        ])
                        .is_ok()
                };
                assert!(parse(min) && parse(max), "{}", setting.env);
                assert!(!parse(max + 1), "{} above its range", setting.env);
                if min > 0 {
                    assert!(!parse(min - 1), "{} below its range", setting.env);
                }
            }
        }
    }

    #[test]
    fn defaults_come_from_the_description() {
        let config = ServeConfig::from_flags(Vec::<String>::new()).expect("defaults parse");
        let Kind::Integer { default, .. } = settings::CACHE_TTL_SECONDS.kind else {
            panic!("an integer");
        };
        assert_eq!(config.cache.cache_ttl_seconds, Duration::from_secs(default));
        assert_eq!(config.cache.redis_key_prefix, "shortener");
        assert_eq!(config.auth_mode, AuthMode::ApiKey);
    }

    #[test]
    fn variables_parse_as_the_environment_would() {
        let config = ServeConfig::from_variables([
            ("CACHE_TTL_SECONDS", "60"),
            ("TRUSTED_PROXIES", "10.0.0.0/8,192.0.2.1"),
            ("RUST_LOG", "info,shortener=debug"),
        ])
        .expect("parses");
        assert_eq!(config.cache.cache_ttl_seconds, Duration::from_secs(60));
        assert_eq!(config.limits.trusted_proxies.len(), 2);
        assert!(ServeConfig::from_variables([("CACHE_TTL_SECONDS", "0")]).is_err());
        assert!(ServeConfig::from_variables([("CACHE_TTL_SECOND", "5")]).is_err());
        assert!(ServeConfig::from_variables([("RUST_LOG", "shortener=loud")]).is_err());
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
