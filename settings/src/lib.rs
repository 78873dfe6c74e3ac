//! Every setting of the shortener service, described once: its environment
//! variable, type, range, default, help, and where a `Shortener` sets it.
//!
//! Everything else derives from this table, so that the two halves of the
//! project cannot disagree:
//! - the service's command line (`app/src/config.rs`) takes each argument's
//!   variable, default, range and help from here;
//! - the operator's `spec.app.config` schema takes its bounds, patterns,
//!   choices, defaults and descriptions from here, and the ConfigMap it writes
//!   maps each field to its variable through here (`operator/src/crd.rs`,
//!   `operator/src/children/app.rs`);
//! - the README's configuration table and docs/operator.md's table of
//!   `spec.app.config` are generated from here ([`markdown`]).
//!
//! Tests on each side prove that every argument of the service is described
//! here, that every described field is in the Shortener's schema, and that
//! every bound the schema admits is a value the service parses.

pub mod markdown;

/// One setting of the service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    /// The environment variable; lower-cased with `-` for `_`, the flag of
    /// `shortener serve` (or `migrate`, `keys`) that sets the same.
    pub env: &'static str,
    /// What it does, for `--help`, the README and the Shortener's schema.
    pub help: &'static str,
    pub kind: Kind,
    /// Where a Kubernetes installation gets it from.
    pub shortener: Shortener,
    /// Who reads it in the service.
    pub read_by: ReadBy,
}

/// The values a setting takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A whole number in `min..=max`.
    Integer { min: u64, max: u64, default: u64 },
    /// A number from 0 to 1.
    Ratio { default: f64 },
    /// `true` or `false`.
    Flag { default: bool },
    /// One of `choices`.
    Choice {
        choices: &'static [&'static str],
        default: &'static str,
    },
    /// Text of the given format; unset unless `default` says otherwise.
    Text {
        default: Option<&'static str>,
        format: Format,
    },
    /// Comma-separated values (a list in the Shortener), each of `item`'s
    /// format; empty by default.
    List { item: Format },
    /// A credential: never written into a ConfigMap or shown.
    Secret,
    /// Still accepted, so that old deployments start, but ignored (with a
    /// warning) in favour of the named setting.
    Replaced { by: &'static str },
}

/// What a text value must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Anything the service's own parser accepts (see its help).
    Any,
    /// Matches this regular expression (anchored; the same in Go's RE2,
    /// which the Kubernetes API server uses, and in Rust's `regex`). Every
    /// match is a value the service accepts; not every accepted value
    /// need match. `examples` match it.
    Pattern {
        regex: &'static str,
        examples: &'static [&'static str],
    },
    /// An IP address or a CIDR network (`10.0.0.0/8`, `fd00::/8`).
    Network,
}

/// Where a setting comes from in a Kubernetes installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortener {
    /// The field of `spec.app.config` at this (dotted, camelCase) path.
    Field(&'static str),
    /// The operator sets it itself; the text says from what.
    Operator(&'static str),
    /// Not settable through a Shortener; the text says why.
    Omitted(&'static str),
}

/// Who reads a setting in the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBy {
    /// An argument of the command line (with its variable as a fallback).
    Flag,
    /// Read from the environment by a library (the log filter, the
    /// OpenTelemetry SDK).
    Environment,
}

impl Setting {
    /// The command-line flag (without `--`).
    pub fn flag(&self) -> String {
        self.env.to_ascii_lowercase().replace('_', "-")
    }

    /// The path under `spec.app.config`, when a Shortener sets it.
    pub fn field(&self) -> Option<&'static str> {
        match self.shortener {
            Shortener::Field(path) => Some(path),
            _ => None,
        }
    }

    /// The default as the service's parser reads it, if there is one.
    pub fn default_value(&self) -> Option<String> {
        match self.kind {
            Kind::Integer { default, .. } => Some(default.to_string()),
            Kind::Ratio { default } => Some(default.to_string()),
            Kind::Flag { default } => Some(default.to_string()),
            Kind::Choice { default, .. } => Some(default.to_string()),
            Kind::Text { default, .. } => default.map(str::to_string),
            Kind::List { .. } | Kind::Secret | Kind::Replaced { .. } => None,
        }
    }

    /// The setting with this environment variable.
    pub fn named(env: &str) -> Option<&'static Setting> {
        ALL.iter().find(|s| s.env == env)
    }

    /// The setting a flag (without `--`) sets.
    pub fn by_flag(flag: &str) -> Option<&'static Setting> {
        ALL.iter()
            .find(|s| s.read_by == ReadBy::Flag && s.flag() == flag)
    }

    /// The setting at a `spec.app.config` path.
    pub fn by_field(path: &str) -> Option<&'static Setting> {
        ALL.iter().find(|s| s.field() == Some(path))
    }
}

/// Declares each setting as a constant named after its variable, and
/// [`ALL`] in the same order (the order of the README's table).
macro_rules! settings {
    ($($(#[$doc:meta])* $name:ident { $($field:ident: $value:expr),* $(,)? })*) => {
        $(
            $(#[$doc])*
            pub const $name: Setting = Setting { env: stringify!($name), $($field: $value),* };
        )*
        /// Every setting, in the order the README lists them.
        pub const ALL: &[Setting] = &[$($name),*];
    };
}

const SECONDS_A_DAY: u64 = 86_400;

/// A host name as the service's URL parser takes it without a doubt:
/// labels start with a letter (a last label of digits would be read as an
/// IPv4 address) and hold no `--` (no punycode to validate).
macro_rules! host_pattern {
    () => {
        r"[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)*(\.[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)*)*"
    };
}

settings! {
    LISTEN_ADDR {
        help: "Address to listen on.",
        kind: Kind::Text { default: Some("0.0.0.0:8080"), format: Format::Any },
        shortener: Shortener::Operator("0.0.0.0:8080, the container port"),
        read_by: ReadBy::Flag,
    }
    DATABASE_URL {
        help: "`postgres://…` or `sqlite://…`; unset means the embedded SQLite file `sqlite://$DATA_DIR/shortener.db`.",
        kind: Kind::Text { default: None, format: Format::Any },
        shortener: Shortener::Operator("PgBouncer's Service as the runtime role, or `database.external`'s Secret"),
        read_by: ReadBy::Flag,
    }
    MIGRATION_DATABASE_URL {
        help: "A direct PostgreSQL URL for migrations (they hold a session advisory lock, which transaction pooling cannot keep), when `DATABASE_URL` goes through PgBouncer.",
        kind: Kind::Text { default: None, format: Format::Any },
        shortener: Shortener::Operator("PostgreSQL's Service as the schema owner, in the `migrate` init container only"),
        read_by: ReadBy::Flag,
    }
    MIGRATE_ON_START {
        help: "Apply pending migrations at start. `false`: apply none, and refuse to start (naming them) unless every migration of this build was applied, e.g. by `shortener migrate` as the schema owner. Migrations of a newer build are allowed with a warning.",
        kind: Kind::Flag { default: true },
        shortener: Shortener::Operator("`false` on the embedded database (the init container migrates), `true` on an external one"),
        read_by: ReadBy::Flag,
    }
    MIGRATE_WAIT_SECS {
        help: "`shortener migrate`: seconds to wait for a database that is not reachable yet.",
        kind: Kind::Integer { min: 0, max: 3_600, default: 60 },
        shortener: Shortener::Operator("on the `migrate` init container"),
        read_by: ReadBy::Flag,
    }
    MIGRATE_WAIT_FOR_ROLE {
        help: "`shortener migrate`: also wait (within `MIGRATE_WAIT_SECS`) while the login is refused, as when a setup job is creating the role; off, a refused login is reported at once.",
        kind: Kind::Flag { default: false },
        shortener: Shortener::Operator("`true` on the `migrate` init container"),
        read_by: ReadBy::Flag,
    }
    DATA_DIR {
        help: "Where the embedded database lives, and the click spill file (`clicks.spill`) always: one directory per replica, on a volume that outlives the process.",
        kind: Kind::Text { default: Some("data"), format: Format::Any },
        shortener: Shortener::Operator("an emptyDir at /var/lib/shortener (the root filesystem is read-only)"),
        read_by: ReadBy::Flag,
    }
    DATABASE_POOL_SIZE {
        help: "Database connections per replica.",
        kind: Kind::Integer { min: 1, max: 500, default: 10 },
        shortener: Shortener::Field("databasePoolSize"),
        read_by: ReadBy::Flag,
    }
    REDIS_URL {
        help: "`redis://…`: the shared cache and the channel that tells every replica about changed links and revoked keys. Without it each replica caches alone (changes reach other replicas within `LOCAL_CACHE_TTL_SECONDS`).",
        kind: Kind::Text { default: None, format: Format::Any },
        shortener: Shortener::Operator("the stack's Redis with its password, or `redis.external`'s Secret"),
        read_by: ReadBy::Flag,
    }
    REDIS_KEY_PREFIX {
        help: "Prefix of every Redis key and channel; installations sharing one Redis need different ones.",
        kind: Kind::Text { default: Some("shortener"), format: Format::Pattern { regex: "^[A-Za-z0-9_.:-]{1,64}$", examples: &["shortener", "team-a:links"] } },
        shortener: Shortener::Field("redis.keyPrefix"),
        read_by: ReadBy::Flag,
    }
    REDIS_TIMEOUT_MS {
        help: "Milliseconds a Redis call may take; a slower one is abandoned and the database asked instead, and Redis is skipped for a second.",
        kind: Kind::Integer { min: 1, max: 10_000, default: 50 },
        shortener: Shortener::Field("redis.timeoutMs"),
        read_by: ReadBy::Flag,
    }
    CACHE_CAPACITY {
        help: "Entries in each replica's in-process cache.",
        kind: Kind::Integer { min: 0, max: 10_000_000, default: 100_000 },
        shortener: Shortener::Field("cache.capacity"),
        read_by: ReadBy::Flag,
    }
    CACHE_MAX_BYTES {
        help: "Bytes the in-process cache may take (each entry weighed by its code, its target and a fixed overhead); 33554432 is 32 MiB.",
        kind: Kind::Integer { min: 0, max: 1 << 40, default: 32 << 20 },
        shortener: Shortener::Field("cache.maxBytes"),
        read_by: ReadBy::Flag,
    }
    LOCAL_CACHE_TTL_SECONDS {
        help: "Longest an in-process entry is served without news of a change (the safety net for a missed invalidation).",
        kind: Kind::Integer { min: 1, max: SECONDS_A_DAY, default: 30 },
        shortener: Shortener::Field("cache.localTtlSeconds"),
        read_by: ReadBy::Flag,
    }
    CACHE_TTL_SECONDS {
        help: "Lifetime of an entry in Redis.",
        kind: Kind::Integer { min: 1, max: 7 * SECONDS_A_DAY, default: 300 },
        shortener: Shortener::Field("cacheTtlSeconds"),
        read_by: ReadBy::Flag,
    }
    NEGATIVE_CACHE_TTL_SECONDS {
        help: "How long \"no such short code\" is remembered in process, so unknown codes do not hammer the database.",
        kind: Kind::Integer { min: 1, max: 3_600, default: 5 },
        shortener: Shortener::Field("negativeCacheTtlSeconds"),
        read_by: ReadBy::Flag,
    }
    STALE_IF_ERROR_SECS {
        help: "How old an in-process copy of a link may be and still be served when neither Redis nor the database can answer (stale-if-error: answered with `X-Cache: STALE`, counted in `shortener_cache_stale_served_total`, the click spilled); 0 = off.",
        kind: Kind::Integer { min: 0, max: SECONDS_A_DAY, default: 3_600 },
        shortener: Shortener::Field("cache.staleIfErrorSeconds"),
        read_by: ReadBy::Flag,
    }
    CACHE_WARM_ENTRIES {
        help: "Most recent active links loaded into the caches at start.",
        kind: Kind::Integer { min: 0, max: 1_000_000, default: 10_000 },
        shortener: Shortener::Field("cache.warmEntries"),
        read_by: ReadBy::Flag,
    }
    CLICK_BATCH_MAX {
        help: "Most clicks written by one INSERT.",
        kind: Kind::Integer { min: 1, max: 10_000, default: 1_000 },
        shortener: Shortener::Field("clicks.batchMax"),
        read_by: ReadBy::Flag,
    }
    CLICK_QUEUE_CAPACITY {
        help: "Clicks that may wait for the writers before redirects wait for room.",
        kind: Kind::Integer { min: 1, max: 1_000_000, default: 10_000 },
        shortener: Shortener::Field("clicks.queueCapacity"),
        read_by: ReadBy::Flag,
    }
    CLICK_WRITERS {
        help: "Click batches written at once, each on its own database connection and counter shard (PostgreSQL; SQLite writes one at a time).",
        kind: Kind::Integer { min: 1, max: 64, default: 1 },
        shortener: Shortener::Field("clicks.writers"),
        read_by: ReadBy::Flag,
    }
    CLICK_SPILL_CAPACITY {
        help: "Clicks kept while the database is unavailable (in `DATA_DIR/clicks.spill`, fsynced before the redirects are answered, so they survive a SIGKILL); beyond it new clicks are dropped and counted (docs/failure-modes.md).",
        kind: Kind::Integer { min: 0, max: 10_000_000, default: 100_000 },
        shortener: Shortener::Field("clicks.spillCapacity"),
        read_by: ReadBy::Flag,
    }
    CLICK_SPILL_MAX_BYTES {
        help: "Bytes the spill file may take (about 100 bytes a click); beyond it, as above.",
        kind: Kind::Integer { min: 4_096, max: 1 << 40, default: 64 << 20 },
        shortener: Shortener::Field("clicks.spillMaxBytes"),
        read_by: ReadBy::Flag,
    }
    CLICK_WRITE_TIMEOUT_MS {
        help: "Longest a click write may take (PgBouncer would otherwise queue it up to its `query_wait_timeout`); past it the batch is spilled and its redirects answered.",
        kind: Kind::Integer { min: 10, max: 60_000, default: 2_000 },
        shortener: Shortener::Field("clicks.writeTimeoutMs"),
        read_by: ReadBy::Flag,
    }
    AUTH_MODE {
        help: "`api-key`: management endpoints need `Authorization: Bearer <key>`; `open`: no authentication (demos, compatibility suites).",
        kind: Kind::Choice { choices: &["api-key", "open"], default: "api-key" },
        shortener: Shortener::Field("authMode"),
        read_by: ReadBy::Flag,
    }
    ADMIN_API_KEY {
        help: "The bootstrap admin key (at least 16 characters, no whitespace), kept only as a SHA-256 hash. Team keys with scopes are issued with `POST /keys` or `shortener keys create` (docs/api.md#api-keys). In `api-key` mode with neither, every management call is refused.",
        kind: Kind::Secret,
        shortener: Shortener::Operator("the generated Secret NAME-admin-key, in `api-key` mode"),
        read_by: ReadBy::Flag,
    }
    KEY_TRUST_SECS {
        help: "How long a replica takes an accepted API key on trust before looking it up again; revocations reach every replica at once through Redis, within this time without it.",
        kind: Kind::Integer { min: 1, max: 3_600, default: 5 },
        shortener: Shortener::Field("keyTrustSeconds"),
        read_by: ReadBy::Flag,
    }
    RATE_LIMIT_PER_MINUTE {
        help: "Management requests per minute per API key (per client address in open mode), across all replicas through Redis (per replica without it); excess gets 429 with `Retry-After` and `RateLimit-*` headers; 0 = off.",
        kind: Kind::Integer { min: 0, max: 1_000_000, default: 600 },
        shortener: Shortener::Field("rateLimit.requestsPerMinute"),
        read_by: ReadBy::Flag,
    }
    RATE_LIMIT_BURST {
        help: "Management requests a client may make at once above that rate.",
        kind: Kind::Integer { min: 1, max: 100_000, default: 100 },
        shortener: Shortener::Field("rateLimit.burst"),
        read_by: ReadBy::Flag,
    }
    CREATE_RATE_LIMIT_PER_MINUTE {
        help: "Creations (`POST /urls`, `/shorten`, `/users`, `/users/bulk`) per minute per client, counted instead of the management limit; 0 = off.",
        kind: Kind::Integer { min: 0, max: 1_000_000, default: 60 },
        shortener: Shortener::Field("rateLimit.createPerMinute"),
        read_by: ReadBy::Flag,
    }
    CREATE_RATE_LIMIT_BURST {
        help: "Creations a client may make at once above that rate.",
        kind: Kind::Integer { min: 1, max: 100_000, default: 120 },
        shortener: Shortener::Field("rateLimit.createBurst"),
        read_by: ReadBy::Flag,
    }
    REDIRECT_MISS_LIMIT_PER_MINUTE {
        help: "Redirect 404s per minute per client address after a lookup beyond the in-process cache; past it such lookups get 429 (cached links keep redirecting); 0 = off.",
        kind: Kind::Integer { min: 0, max: 1_000_000, default: 60 },
        shortener: Shortener::Field("rateLimit.redirectMissPerMinute"),
        read_by: ReadBy::Flag,
    }
    REDIRECT_MISS_BURST {
        help: "Redirect misses a client may cause at once above that rate.",
        kind: Kind::Integer { min: 1, max: 100_000, default: 100 },
        shortener: Shortener::Field("rateLimit.redirectMissBurst"),
        read_by: ReadBy::Flag,
    }
    LINK_PASSWORD_LIMIT_PER_MINUTE {
        help: "Wrong passwords a client address may give one protected link per minute; past it even the right one gets 429 until the allowance refills (each check costs ~20 ms of Argon2id).",
        kind: Kind::Integer { min: 1, max: 10_000, default: 10 },
        shortener: Shortener::Field("rateLimit.linkPasswordPerMinute"),
        read_by: ReadBy::Flag,
    }
    LINK_PASSWORD_BURST {
        help: "Wrong passwords a client may give one link at once above that rate.",
        kind: Kind::Integer { min: 1, max: 10_000, default: 10 },
        shortener: Shortener::Field("rateLimit.linkPasswordBurst"),
        read_by: ReadBy::Flag,
    }
    TRUSTED_PROXIES {
        help: "Networks of the proxies in front of the service (CIDRs or addresses, e.g. `10.0.0.0/8`). `X-Forwarded-For` (the right-most address outside them) and `X-Real-IP` name the client only when the TCP peer is inside one; empty: the peer is the client.",
        kind: Kind::List { item: Format::Network },
        shortener: Shortener::Field("trustedProxies"),
        read_by: ReadBy::Flag,
    }
    TRUST_PROXY_HEADERS {
        help: "Replaced by `TRUSTED_PROXIES`: accepted so that old deployments start, but ignored with a warning (it trusted `X-Real-IP` from anyone).",
        kind: Kind::Replaced { by: "TRUSTED_PROXIES" },
        shortener: Shortener::Omitted("replaced by trustedProxies"),
        read_by: ReadBy::Flag,
    }
    ALLOW_PRIVATE_TARGETS {
        help: "Accept targets whose host is `localhost` or an IP literal in a loopback, private, link-local (cloud metadata) or shared range; credentials before the host, backslashes and invisible formatting characters are refused always.",
        kind: Kind::Flag { default: false },
        shortener: Shortener::Field("allowPrivateTargets"),
        read_by: ReadBy::Flag,
    }
    COUNT_BOTS {
        help: "Count visits by crawlers, link previewers and monitors (known by their `User-Agent`) as clicks. Off: they are answered as anyone, recorded as `bot_visit` events, and left out of redirect counts and visit caps. `HEAD` requests are never clicks.",
        kind: Kind::Flag { default: false },
        shortener: Shortener::Field("countBots"),
        read_by: ReadBy::Flag,
    }
    DENIED_TARGET_DOMAINS {
        help: "Domains refused as targets, with their subdomains (comma-separated).",
        kind: Kind::List { item: Format::Pattern { regex: r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?$", examples: &["evil.example", "phish.example."] } },
        shortener: Shortener::Field("deniedTargetDomains"),
        read_by: ReadBy::Flag,
    }
    PUBLIC_BASE_URL {
        help: "Base of the short URLs the service hands out (`short_url` in `POST /shorten` answers, the QR codes of `GET /urls/{id}/qr`), e.g. `https://sho.rt`; unset: the request's Host.",
        kind: Kind::Text { default: None, format: Format::Any },
        shortener: Shortener::Operator("from `ingress.host` (https with `ingress.tlsSecretName`)"),
        read_by: ReadBy::Flag,
    }
    REQUEST_TIMEOUT_SECS {
        help: "A request taking longer is answered 503.",
        kind: Kind::Integer { min: 1, max: 300, default: 10 },
        shortener: Shortener::Field("requestTimeoutSeconds"),
        read_by: ReadBy::Flag,
    }
    HEADER_READ_TIMEOUT_SECS {
        help: "A client that has not sent a request's headers within this is disconnected (slow-header clients, when nothing buffers in front of the service).",
        kind: Kind::Integer { min: 1, max: 300, default: 10 },
        shortener: Shortener::Field("headerReadTimeoutSeconds"),
        read_by: ReadBy::Flag,
    }
    SHUTDOWN_GRACE_SECS {
        help: "Time to finish in-flight requests after SIGTERM (on Kubernetes the pod gets the drains before and after SIGTERM, this, and 10 s more).",
        kind: Kind::Integer { min: 0, max: 600, default: 20 },
        shortener: Shortener::Field("shutdownGraceSeconds"),
        read_by: ReadBy::Flag,
    }
    SHUTDOWN_DRAIN_SECS {
        help: "After SIGTERM, keep serving this long while `/readyz` answers 503, so load balancers that still send to a terminating replica take it out first; then stop accepting and finish in-flight requests within SHUTDOWN_GRACE_SECS.",
        kind: Kind::Integer { min: 0, max: 60, default: 0 },
        shortener: Shortener::Operator("10 s: the readiness probe's detection (4 s) and an ingress controller's reaction"),
        read_by: ReadBy::Flag,
    }
    ACCESS_LOG {
        help: "Access-log lines: `all`, `errors` (4xx, 5xx, slower than 1 s; the ingress logs the rest) or `none` (`off` is accepted too).",
        kind: Kind::Choice { choices: &["all", "errors", "none"], default: "errors" },
        shortener: Shortener::Field("accessLog"),
        read_by: ReadBy::Flag,
    }
    LOG_FORMAT {
        help: "`json` (one object per line, with `request_id`) or `text`.",
        kind: Kind::Choice { choices: &["json", "text"], default: "json" },
        shortener: Shortener::Operator("`json`"),
        read_by: ReadBy::Flag,
    }
    RUST_LOG {
        help: "Log filter (`info`, `shortener=debug,info`, …).",
        kind: Kind::Text { default: Some("info"), format: Format::Any },
        shortener: Shortener::Operator("`spec.app.logLevel`"),
        read_by: ReadBy::Environment,
    }
    OTEL_EXPORTER_OTLP_ENDPOINT {
        help: "Base URL of an OpenTelemetry collector's OTLP/HTTP receiver, e.g. `http://otel-collector:4318`; spans go to `<base>/v1/traces` as protobuf. Plain `http://` only: a collector carries them on over TLS. Unset: no traces.",
        kind: Kind::Text { default: None, format: Format::Pattern {
            regex: concat!(
                r"^http://",
                host_pattern!(),
                r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?",
                r"(/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?$",
            ),
            examples: &["http://otel-collector.observability:4318", "http://localhost:4318/otlp/"],
        } },
        shortener: Shortener::Field("tracing.endpoint"),
        read_by: ReadBy::Flag,
    }
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT {
        help: "The full URL for traces, used as given; wins over `OTEL_EXPORTER_OTLP_ENDPOINT`.",
        kind: Kind::Text { default: None, format: Format::Any },
        shortener: Shortener::Omitted("tracing.endpoint names the collector"),
        read_by: ReadBy::Flag,
    }
    OTEL_EXPORTER_OTLP_PROTOCOL {
        help: "The only protocol built in (no gRPC).",
        kind: Kind::Choice { choices: &["http/protobuf"], default: "http/protobuf" },
        shortener: Shortener::Omitted("one value"),
        read_by: ReadBy::Flag,
    }
    OTEL_SERVICE_NAME {
        help: "`service.name` of every span.",
        kind: Kind::Text { default: Some("shortener"), format: Format::Any },
        shortener: Shortener::Operator("the Shortener's name"),
        read_by: ReadBy::Flag,
    }
    OTEL_TRACES_SAMPLER {
        help: "`always_on`, `always_off`, `traceidratio`, `parentbased_always_on`, `parentbased_always_off` or `parentbased_traceidratio`; `parentbased_*` follow the sampling decision of an incoming `traceparent`.",
        kind: Kind::Choice {
            choices: &["always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"],
            default: "parentbased_traceidratio",
        },
        shortener: Shortener::Field("tracing.sampler"),
        read_by: ReadBy::Flag,
    }
    OTEL_TRACES_SAMPLER_ARG {
        help: "Share of new traces kept by the `*traceidratio` samplers (0–1).",
        kind: Kind::Ratio { default: 1.0 },
        shortener: Shortener::Field("tracing.sampleRatio"),
        read_by: ReadBy::Flag,
    }
    OTEL_RESOURCE_ATTRIBUTES {
        help: "Extra resource attributes of every span (`key=value,…`), read by the OpenTelemetry SDK as the specification says; so are `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_BSP_*` (batch size and delay: 512 spans or 5 s).",
        kind: Kind::Text { default: None, format: Format::Any },
        shortener: Shortener::Operator("the pod's name and namespace, with tracing on"),
        read_by: ReadBy::Environment,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fields_and_flags_are_unique() {
        for (i, a) in ALL.iter().enumerate() {
            for b in &ALL[i + 1..] {
                assert_ne!(a.env, b.env);
                if a.field().is_some() {
                    assert_ne!(a.field(), b.field(), "{} and {}", a.env, b.env);
                }
            }
        }
    }

    #[test]
    fn defaults_lie_within_their_bounds() {
        for s in ALL {
            match s.kind {
                Kind::Integer { min, max, default } => {
                    assert!(min <= default && default <= max, "{}", s.env)
                }
                Kind::Ratio { default } => assert!((0.0..=1.0).contains(&default), "{}", s.env),
                Kind::Choice { choices, default } => {
                    assert!(choices.contains(&default), "{}", s.env)
                }
                _ => {}
            }
        }
    }

    /// YAML 1.1 readers (kubectl's and Helm's among them) take these for
    /// booleans or null when unquoted, in a Shortener or in the CRD.
    #[test]
    fn no_choice_or_default_reads_as_something_else_in_yaml() {
        let ambiguous = [
            "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
        ];
        for s in ALL {
            let mut texts: Vec<&str> = Vec::new();
            if let Kind::Choice { choices, .. } = s.kind {
                texts.extend(choices);
            }
            if let Kind::Text {
                default: Some(d), ..
            } = s.kind
            {
                texts.push(d);
            }
            for text in texts {
                assert!(
                    !ambiguous.contains(&text.to_ascii_lowercase().as_str()),
                    "{}: {text}",
                    s.env
                );
            }
        }
    }

    #[test]
    fn lookups_find_each_setting() {
        for s in ALL {
            assert_eq!(Setting::named(s.env), Some(s));
            if s.read_by == ReadBy::Flag {
                assert_eq!(Setting::by_flag(&s.flag()), Some(s));
            }
            if let Some(path) = s.field() {
                assert_eq!(Setting::by_field(path), Some(s));
            }
        }
    }
}
