//! Generated credentials. These Secrets are created once and never updated: rotating them
//! under a running database would lock the app out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rand::Rng;
use rand::distr::Alphanumeric;

use super::stack::{APP_ROLE, OWNER_ROLE, PGBOUNCER_ADMIN, REDIS_AUTH_CONF_KEY, SUPERUSER};
use super::{Component, Instance, KEPT_WITH_CLAIM_ANNOTATION, cloudnative_pg};

/// Alphanumeric only, so the value can sit in a URL and a PgBouncer userlist unescaped.
pub fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Password of the embedded PostgreSQL's superuser, which only the role-setup Job uses.
/// (Instances created before the roles existed also carry a `userlist.txt` here, unused now.)
/// When the volume outlives the Shortener, so does this Secret: no owner, annotated with the
/// claim ([`Instance::kept_for_it`]).
pub fn database_secret(instance: &Instance<'_>, password: &str) -> Secret {
    let mut metadata = instance.meta(instance.database_secret_name(), Component::App);
    if instance.keeps_its_volume() {
        metadata.owner_references = None;
        metadata.annotations = Some(BTreeMap::from([(
            KEPT_WITH_CLAIM_ANNOTATION.to_string(),
            super::postgres::claim_name(instance),
        )]));
    }
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([
            ("password".to_string(), password.to_string()),
            ("username".to_string(), SUPERUSER.to_string()),
        ])),
        ..Secret::default()
    }
}

/// A role's Secret: `Opaque` for the embedded database (as it always was: a Secret's type
/// is immutable), `kubernetes.io/basic-auth` with CloudNativePG's reload label for a
/// CloudNativePG Cluster, whose managed roles and `initdb` owner read it.
fn role_secret(instance: &Instance<'_>, name: String) -> (ObjectMeta, Option<String>) {
    let mut metadata = instance.meta(name, Component::App);
    if instance.spec().database.cloud_native_pg.is_none() {
        return (metadata, Some("Opaque".into()));
    }
    metadata
        .labels
        .get_or_insert_default()
        .extend(cloudnative_pg::role_secret_labels());
    (metadata, Some("kubernetes.io/basic-auth".into()))
}

/// The schema owner's credentials: the migrations run as it.
pub fn owner_secret(instance: &Instance<'_>, password: &str) -> Secret {
    let (metadata, type_) = role_secret(instance, instance.owner_secret_name());
    Secret {
        metadata,
        type_,
        string_data: Some(BTreeMap::from([
            ("password".to_string(), password.to_string()),
            ("username".to_string(), OWNER_ROLE.to_string()),
        ])),
        ..Secret::default()
    }
}

/// The runtime role's credentials and PgBouncer's `userlist.txt`: that role and the
/// pooler's console admin, a user of PgBouncer only. The superuser and the owner are not in
/// it, so neither can log in through the pooler.
pub fn runtime_secret(instance: &Instance<'_>, password: &str, pgbouncer_admin: &str) -> Secret {
    let userlist =
        format!("\"{APP_ROLE}\" \"{password}\"\n\"{PGBOUNCER_ADMIN}\" \"{pgbouncer_admin}\"\n");
    let (metadata, type_) = role_secret(instance, instance.runtime_secret_name());
    Secret {
        metadata,
        type_,
        string_data: Some(BTreeMap::from([
            ("password".to_string(), password.to_string()),
            ("username".to_string(), APP_ROLE.to_string()),
            (
                "pgbouncer-admin-password".to_string(),
                pgbouncer_admin.to_string(),
            ),
            (
                "pgbouncer-admin-username".to_string(),
                PGBOUNCER_ADMIN.to_string(),
            ),
            ("userlist.txt".to_string(), userlist),
        ])),
        ..Secret::default()
    }
}

/// Admin API key for `AUTH_MODE=api-key`.
pub fn admin_secret(instance: &Instance<'_>, api_key: &str) -> Secret {
    Secret {
        metadata: instance.meta(instance.admin_secret_name(), Component::App),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([(
            "api-key".to_string(),
            api_key.to_string(),
        )])),
        ..Secret::default()
    }
}

/// Password of the embedded Redis: `password` for clients, `auth.conf` for the server, which
/// includes it from its config so the password is in neither the ConfigMap nor its arguments.
pub fn redis_secret(instance: &Instance<'_>, password: &str) -> Secret {
    Secret {
        metadata: instance.meta(instance.redis_secret_name(), Component::App),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([
            ("password".to_string(), password.to_string()),
            (
                REDIS_AUTH_CONF_KEY.to_string(),
                format!("requirepass {password}\n"),
            ),
        ])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::testing::{assert_owned, shortener};
    use crate::crd::ShortenerSpec;

    #[test]
    fn tokens_are_random_alphanumeric_of_the_requested_length() {
        let a = random_token(32);
        let b = random_token(32);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn database_secrets_hold_one_role_each_and_the_matching_userlist() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let secret = database_secret(&i, "s3cret");
        // Kept with the volume by default (children::tests covers both cases).
        assert!(i.kept_for_it(&secret.metadata));
        assert_eq!(secret.metadata.name.as_deref(), Some("links-db"));
        let data = secret.string_data.unwrap();
        assert_eq!(data["password"], "s3cret");
        assert_eq!(data["username"], "shortener");
        assert!(!data.contains_key("userlist.txt"));

        let owner = owner_secret(&i, "own").string_data.unwrap();
        assert_eq!(owner["username"], "shortener_owner");
        assert_eq!(owner["password"], "own");

        let runtime = runtime_secret(&i, "run", "adm");
        assert_eq!(runtime.metadata.name.as_deref(), Some("links-db-app"));
        let data = runtime.string_data.unwrap();
        assert_eq!(data["username"], "shortener_app");
        assert_eq!(data["password"], "run");
        assert_eq!(data["pgbouncer-admin-username"], "pgbouncer_admin");
        assert_eq!(
            data["userlist.txt"],
            "\"shortener_app\" \"run\"\n\"pgbouncer_admin\" \"adm\"\n"
        );
    }

    #[test]
    fn redis_secret_holds_the_password_and_the_server_setting() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let secret = redis_secret(&i, "pw");
        assert_owned(&secret.metadata, "app");
        assert_eq!(secret.metadata.name.as_deref(), Some("links-redis-auth"));
        let data = secret.string_data.unwrap();
        assert_eq!(data["password"], "pw");
        assert_eq!(data["auth.conf"], "requirepass pw\n");
    }

    #[test]
    fn admin_secret_holds_the_api_key() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let secret = admin_secret(&i, "k3y");
        assert_eq!(secret.metadata.name.as_deref(), Some("links-admin"));
        assert_eq!(secret.string_data.unwrap()["api-key"], "k3y");
    }
}
