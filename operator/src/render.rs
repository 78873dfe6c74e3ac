//! `render`: the objects the controller would write for a Shortener, without a cluster.

use kube::ResourceExt;
use serde::Serialize;

use crate::children::{self, Credentials, Instance, Observed, OptionalApis, RENDER_UID};
use crate::crd::Shortener;
use crate::error::{Error, Result};

/// Parse a Shortener manifest and fill in what the API server would: defaults (through the
/// serde defaults that mirror the CRD's), a namespace and a uid for owner references.
pub fn load(yaml: &str) -> Result<Shortener> {
    let mut shortener: Shortener = serde_yaml::from_str(yaml)?;
    if shortener.metadata.name.is_none() {
        return Err(Error::MissingObjectKey("metadata.name"));
    }
    if shortener.namespace().is_none() {
        shortener.metadata.namespace = Some("default".into());
    }
    if shortener.metadata.uid.is_none() {
        shortener.metadata.uid = Some(RENDER_UID.into());
    }
    Ok(shortener)
}

/// Every child as one multi-document YAML stream, assuming the optional APIs (the Prometheus
/// Operator's, the Gateway API) are served.
/// Generated Secrets carry placeholder values: the real ones are random and created once.
pub fn render(shortener: &Shortener) -> Result<String> {
    let instance = Instance::new(shortener)?;
    let observed = Observed {
        apis: OptionalApis::ALL,
        postgres_template_size: None,
        operator_namespace: None,
    };
    let desired = children::desired_state(&instance, &observed, &Credentials::placeholder())?;
    let mut out = String::new();
    for secret in &desired.secrets {
        push_document(&mut out, secret)?;
    }
    for claim in &desired.claims {
        push_document(&mut out, claim)?;
    }
    for child in &desired.children {
        push_document(&mut out, &child.to_dynamic()?)?;
    }
    Ok(out)
}

fn push_document<T: Serialize>(out: &mut String, object: &T) -> Result<()> {
    out.push_str("---\n");
    out.push_str(&serde_yaml::to_string(object)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_fills_namespace_uid_and_defaults() {
        let s = load("apiVersion: shortener.dev/v1alpha1\nkind: Shortener\nmetadata:\n  name: demo\nspec: {}\n").unwrap();
        assert_eq!(s.namespace().as_deref(), Some("default"));
        assert_eq!(s.metadata.uid.as_deref(), Some(RENDER_UID));
        assert_eq!(s.spec.app.replicas, 3);
        assert_eq!(s.spec.ingress.class_name, "nginx");
    }

    #[test]
    fn load_rejects_nameless_and_malformed_input() {
        assert!(matches!(
            load("apiVersion: shortener.dev/v1alpha1\nkind: Shortener\nmetadata: {}\nspec: {}\n"),
            Err(Error::MissingObjectKey("metadata.name"))
        ));
        assert!(load("apiVersion: shortener.dev/v1alpha1\nkind: Shortener\nmetadata:\n  name: x\nspec:\n  app:\n    replicas: many\n").is_err());
    }

    #[test]
    fn render_emits_one_document_per_object() {
        let s = load("apiVersion: shortener.dev/v1alpha1\nkind: Shortener\nmetadata:\n  name: demo\nspec: {}\n").unwrap();
        let out = render(&s).unwrap();
        // 5 secrets + 28 applied children for the default spec.
        assert_eq!(out.matches("---\n").count(), 33);
        assert!(out.contains("kind: ServiceMonitor"));
        assert!(out.contains(&format!("uid: {RENDER_UID}")));
        assert!(out.contains("password: generated-by-operator"));
    }
}
