//! Generated credentials. These Secrets are created once and never updated: rotating them
//! under a running database would lock the app out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use rand::Rng;
use rand::distr::Alphanumeric;

use super::app::DATABASE_USER;
use super::{Component, Instance};

/// Alphanumeric only, so the value can sit in a URL and a PgBouncer userlist unescaped.
pub fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Password of the `shortener` database role, plus the PgBouncer userlist derived from it.
pub fn database_secret(instance: &Instance<'_>, password: &str) -> Secret {
    Secret {
        metadata: instance.meta(instance.database_secret_name(), Component::App),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([
            ("password".to_string(), password.to_string()),
            ("username".to_string(), DATABASE_USER.to_string()),
            (
                "userlist.txt".to_string(),
                format!("\"{DATABASE_USER}\" \"{password}\"\n"),
            ),
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
                super::redis::AUTH_CONF_KEY.to_string(),
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
    fn database_secret_holds_password_and_matching_userlist() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let secret = database_secret(&i, "s3cret");
        assert_owned(&secret.metadata, "app");
        assert_eq!(secret.metadata.name.as_deref(), Some("links-db"));
        let data = secret.string_data.unwrap();
        assert_eq!(data["password"], "s3cret");
        assert_eq!(data["userlist.txt"], "\"shortener\" \"s3cret\"\n");
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
