//! Errors of the operator; the variant name becomes the `error` label of the failure metric.

#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("Shortener has no {0}")]
    MissingObjectKey(&'static str),

    #[error("Kubernetes API request failed: {0}")]
    Kube(#[source] kube::Error),

    #[error("could not apply {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("could not prune {key}: {source}")]
    Prune {
        key: String,
        #[source]
        source: kube::Error,
    },

    #[error("could not build {0}: {1}")]
    Build(&'static str, #[source] serde_json::Error),

    #[error("invalid Shortener spec: {0}")]
    InvalidSpec(String),

    #[error("YAML encoding failed: {0}")]
    Yaml(#[from] serde_yaml::Error),

    #[error("could not read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Low-cardinality label for the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::MissingObjectKey(_) => "missing_object_key",
            Self::Kube(_) => "kube",
            Self::Apply { .. } => "apply",
            Self::Prune { .. } => "prune",
            Self::Build(..) => "build",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::Yaml(_) => "yaml",
            Self::Read { .. } => "read",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
