//! Structured logs: one JSON object per line, with the request's span
//! fields (including `request_id`) on every line logged inside a request.

use tracing_subscriber::EnvFilter;

pub fn init(format: crate::config::LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        crate::config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        crate::config::LogFormat::Text => builder.try_init(),
    };
    if let Err(err) = result {
        eprintln!("logging was already initialised: {err}");
    }
}
