//! What a platform team sets on the stack's pods besides their containers: where they run
//! (node selector, affinity, tolerations, topology spread, priority class), the pull secrets
//! of a private registry, and extra labels and annotations.
//!
//! Set for every pod of the stack (`spec.pods`) and per component (`spec.app.pods`,
//! `spec.database.postgres.pods`, `spec.pgbouncer.pods`, `spec.redis.pods`): a component's
//! field, when set, replaces the Shortener-wide one; labels and annotations are merged (the
//! component's value wins). The role-setup Job runs with the database's. Applied in one
//! place, [`PodOptions::apply`], which every pod template of the stack goes through.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, PodSpec, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use kube::core::Rule;
use serde::{Deserialize, Serialize};

use crate::children::{Component, OWN_LABEL_KEYS};
use crate::crd::ShortenerSpec;

/// The prefix of the annotations the operator writes on pod templates (the config digest).
pub const OWN_ANNOTATION_PREFIX: &str = "shortener.dev/";

/// The node label the default spread of the app's pods is over, first.
pub const HOSTNAME_TOPOLOGY: &str = "kubernetes.io/hostname";
/// The node label the default spread is over, second (where nodes carry it).
pub const ZONE_TOPOLOGY: &str = "topology.kubernetes.io/zone";

/// Fields of a component's pods (each as in a pod's spec; see `kubectl explain pod.spec`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodOptions {
    /// Extra labels of the pods (not of the objects that make them). The operator's own
    /// `app.kubernetes.io/` keys, which its selectors use, cannot be set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = own_labels_rule())]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations of the pods (keys under `shortener.dev/` are the operator's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = own_annotations_rule())]
    pub annotations: BTreeMap<String, String>,
    /// Only nodes with all these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 32))]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Node affinity and pod (anti-)affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = terse)]
    pub affinity: Option<Affinity>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(
        "self.all(t, !has(t.operator) || t.operator == 'Exists' || t.operator == 'Equal')"
    ).message("a toleration's operator is Exists or Equal"))]
    #[x_kube(validation = Rule::new(
        "self.all(t, !has(t.operator) || t.operator != 'Exists' || !has(t.value) || size(t.value) == 0)"
    ).message("a toleration with operator Exists has no value"))]
    #[x_kube(validation = Rule::new(
        "self.all(t, !has(t.effect) || t.effect in ['', 'NoSchedule', 'PreferNoSchedule', 'NoExecute'])"
    ).message("a toleration's effect is NoSchedule, PreferNoSchedule or NoExecute (or empty: all)"))]
    #[schemars(transform = terse)]
    pub tolerations: Option<Vec<Toleration>>,
    /// How the pods spread over nodes and zones. Unset, the app's pods spread over nodes,
    /// then zones, as evenly as the scheduler can without refusing to schedule
    /// (`ScheduleAnyway`); an empty list turns that off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.all(c, c.maxSkew >= 1)")
        .message("a topology spread constraint's maxSkew is at least 1"))]
    #[x_kube(validation = Rule::new(
        "self.all(c, c.whenUnsatisfiable == 'DoNotSchedule' || c.whenUnsatisfiable == 'ScheduleAnyway')"
    ).message("whenUnsatisfiable is DoNotSchedule or ScheduleAnyway"))]
    #[schemars(transform = terse)]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// The PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    ))]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,
    /// Secrets (of the Shortener's namespace) to pull the images with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    #[schemars(transform = terse)]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
}

/// Drops the descriptions inside a Kubernetes type's schema (each field is documented by
/// `kubectl explain pod.spec`), keeping the field's own: Affinity alone would otherwise add
/// 30 KB per component and push the CRD past what a client-side `kubectl apply` can store.
/// Drops the descriptions nested in an upstream Kubernetes type's schema (they would make the
/// CRD larger than a client-side apply can store), keeping the field's own.
pub(crate) fn terse(schema: &mut schemars::Schema) {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(object) => {
                object.remove("description");
                object.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let own = object.remove("description");
    object.values_mut().for_each(strip);
    if let Some(own) = own {
        object.insert("description".into(), own);
    }
}

fn own_labels_rule() -> Rule {
    let keys: Vec<String> = OWN_LABEL_KEYS.iter().map(|k| format!("'{k}'")).collect();
    Rule::new(format!("self.all(k, !(k in [{}]))", keys.join(", "))).message(
        kube::core::Message::Message(format!(
            "labels may not set the operator's own keys ({})",
            OWN_LABEL_KEYS.join(", ")
        )),
    )
}

fn own_annotations_rule() -> Rule {
    Rule::new(format!(
        "self.all(k, !k.startsWith('{OWN_ANNOTATION_PREFIX}'))"
    ))
    .message(kube::core::Message::Message(format!(
        "annotations under {OWN_ANNOTATION_PREFIX} are the operator's"
    )))
}

impl PodOptions {
    /// `self` with `component`'s options over it: each field the component sets replaces
    /// this one; labels and annotations are merged.
    pub fn overlaid(&self, component: &Self) -> Self {
        let merged = |wide: &BTreeMap<String, String>, own: &BTreeMap<String, String>| {
            let mut all = wide.clone();
            all.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
            all
        };
        fn pick<T: Clone>(wide: &Option<T>, own: &Option<T>) -> Option<T> {
            own.clone().or_else(|| wide.clone())
        }
        Self {
            labels: merged(&self.labels, &component.labels),
            annotations: merged(&self.annotations, &component.annotations),
            node_selector: pick(&self.node_selector, &component.node_selector),
            affinity: pick(&self.affinity, &component.affinity),
            tolerations: pick(&self.tolerations, &component.tolerations),
            topology_spread_constraints: pick(
                &self.topology_spread_constraints,
                &component.topology_spread_constraints,
            ),
            priority_class_name: pick(&self.priority_class_name, &component.priority_class_name),
            image_pull_secrets: pick(&self.image_pull_secrets, &component.image_pull_secrets),
        }
    }

    /// Sets these options on a pod's spec and adds its labels and annotations to `labels`
    /// and `annotations` (which already hold the operator's: those stay). `spread`: the
    /// topology spread when none is set (the app's default).
    pub fn apply(
        &self,
        pod: &mut PodSpec,
        labels: &mut BTreeMap<String, String>,
        annotations: &mut BTreeMap<String, String>,
        spread: Option<Vec<TopologySpreadConstraint>>,
    ) {
        for (key, value) in &self.labels {
            labels.entry(key.clone()).or_insert_with(|| value.clone());
        }
        for (key, value) in &self.annotations {
            annotations
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
        pod.node_selector = self.node_selector.clone();
        pod.affinity = self.affinity.clone();
        pod.tolerations = self.tolerations.clone();
        pod.priority_class_name = self.priority_class_name.clone();
        pod.image_pull_secrets = self.image_pull_secrets.clone();
        pod.topology_spread_constraints = match &self.topology_spread_constraints {
            Some(set) if set.is_empty() => None,
            Some(set) => Some(set.clone()),
            None => spread,
        };
    }
}

/// The default spread of a component's replicas: one node, then one zone, at most one pod
/// apart from the next, preferred but never a reason not to schedule (a one-node cluster
/// still runs every replica). Counted per rollout revision (`pod-template-hash`), so the
/// pods of a rollout spread among themselves.
pub fn default_spread(selector: BTreeMap<String, String>) -> Vec<TopologySpreadConstraint> {
    [HOSTNAME_TOPOLOGY, ZONE_TOPOLOGY]
        .into_iter()
        .map(|topology| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: topology.into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            }),
            match_label_keys: Some(vec!["pod-template-hash".into()]),
            ..Default::default()
        })
        .collect()
}

impl ShortenerSpec {
    /// The pod options of `component`'s pods: the Shortener-wide ones with the component's
    /// over them.
    pub fn pod_options(&self, component: Component) -> PodOptions {
        let own = match component {
            Component::App => Some(self.app.pods.clone()),
            Component::PgBouncer => Some(self.pgbouncer.pods.clone()),
            Component::Redis => Some(self.redis.pods.clone()),
            Component::Postgres | Component::RoleSetup | Component::Backup => {
                match &self.database.cloud_native_pg {
                    Some(cnpg) => Some(cnpg.pods.clone()),
                    None => self.database.postgres.as_ref().map(|p| p.pods.clone()),
                }
            }
            Component::Monitoring => None,
        };
        match own {
            Some(own) => self.pods.overlaid(&own),
            None => self.pods.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::testing::shortener;
    use crate::children::{
        CONFIG_HASH_ANNOTATION, Child, Credentials, Instance, KEPT_WITH_CLAIM_ANNOTATION, Observed,
        desired_state,
    };
    use crate::crd::{PostgresSpec, ShortenerSpec};
    use k8s_openapi::api::core::v1::PodTemplateSpec;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn toleration(key: &str) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }
    }

    /// Every pod template of the stack, by `Kind/name` of its controller.
    fn templates(spec: ShortenerSpec) -> Vec<(String, PodTemplateSpec)> {
        let s = shortener(spec);
        let instance = Instance::new(&s).unwrap();
        let state =
            desired_state(&instance, &Observed::default(), &Credentials::placeholder()).unwrap();
        state
            .children
            .iter()
            .filter_map(|child| {
                let template = match child {
                    Child::Deployment(d) => d.spec.as_ref()?.template.clone(),
                    Child::StatefulSet(s) => s.spec.as_ref()?.template.clone(),
                    Child::Job(j) => j.spec.as_ref()?.template.clone(),
                    _ => return None,
                };
                Some((child.key(), template))
            })
            .collect()
    }

    #[test]
    fn the_operators_labels_are_the_ones_the_rule_protects() {
        let s = shortener(ShortenerSpec::default());
        let instance = Instance::new(&s).unwrap();
        let keys: Vec<String> = instance.labels(Component::App).into_keys().collect();
        let mut own: Vec<String> = OWN_LABEL_KEYS.iter().map(|k| k.to_string()).collect();
        own.sort();
        assert_eq!(keys, own);
        for annotation in [CONFIG_HASH_ANNOTATION, KEPT_WITH_CLAIM_ANNOTATION] {
            assert!(
                annotation.starts_with(OWN_ANNOTATION_PREFIX),
                "{annotation}"
            );
        }
    }

    #[test]
    fn a_components_fields_replace_the_shortener_wide_ones_and_maps_merge() {
        let wide = PodOptions {
            labels: map(&[("team", "platform"), ("tier", "web")]),
            node_selector: Some(map(&[("pool", "general")])),
            tolerations: Some(vec![toleration("dedicated")]),
            priority_class_name: Some("standard".into()),
            ..Default::default()
        };
        let own = PodOptions {
            labels: map(&[("tier", "edge")]),
            node_selector: Some(map(&[("pool", "edge")])),
            ..Default::default()
        };
        let merged = wide.overlaid(&own);
        assert_eq!(
            merged.labels,
            map(&[("team", "platform"), ("tier", "edge")])
        );
        assert_eq!(merged.node_selector, Some(map(&[("pool", "edge")])));
        assert_eq!(merged.tolerations, wide.tolerations);
        assert_eq!(merged.priority_class_name.as_deref(), Some("standard"));
    }

    #[test]
    fn every_pod_of_the_stack_gets_the_shortener_wide_options() {
        let spec = ShortenerSpec {
            pods: PodOptions {
                labels: map(&[("team", "platform")]),
                annotations: map(&[("example.com/owner", "sre")]),
                node_selector: Some(map(&[("pool", "general")])),
                tolerations: Some(vec![toleration("dedicated")]),
                priority_class_name: Some("standard".into()),
                image_pull_secrets: Some(vec![LocalObjectReference {
                    name: "registry".into(),
                }]),
                ..Default::default()
            },
            ..Default::default()
        };
        let all = templates(spec);
        // The app, PgBouncer and Redis Deployments, PostgreSQL's StatefulSet, the role Job.
        assert_eq!(
            all.len(),
            5,
            "{:?}",
            all.iter().map(|(k, _)| k).collect::<Vec<_>>()
        );
        for (key, template) in all {
            let meta = template.metadata.unwrap();
            let labels = meta.labels.unwrap();
            assert_eq!(labels["team"], "platform", "{key}");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "shortener-operator");
            assert_eq!(
                meta.annotations.unwrap()["example.com/owner"],
                "sre",
                "{key}"
            );
            let pod = template.spec.unwrap();
            assert_eq!(
                pod.node_selector,
                Some(map(&[("pool", "general")])),
                "{key}"
            );
            assert_eq!(
                pod.tolerations.unwrap()[0].key.as_deref(),
                Some("dedicated")
            );
            assert_eq!(pod.priority_class_name.as_deref(), Some("standard"));
            assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "registry");
        }
    }

    #[test]
    fn the_database_options_reach_its_pod_and_the_role_job_only() {
        let mut spec = ShortenerSpec::default();
        spec.database.postgres = Some(PostgresSpec {
            pods: PodOptions {
                node_selector: Some(map(&[("disk", "ssd")])),
                ..Default::default()
            },
            ..PostgresSpec::default()
        });
        let spec = spec;
        for (key, template) in templates(spec) {
            let selector = template.spec.unwrap().node_selector;
            let database = key.starts_with("StatefulSet/") || key.starts_with("Job/");
            assert_eq!(selector.is_some(), database, "{key}");
        }
    }

    #[test]
    fn the_app_spreads_over_nodes_and_zones_unless_told_otherwise() {
        let spread_of = |spec: ShortenerSpec| {
            templates(spec)
                .into_iter()
                .find(|(key, _)| key == "Deployment/links")
                .and_then(|(_, t)| t.spec.unwrap().topology_spread_constraints)
        };
        let default = spread_of(ShortenerSpec::default()).unwrap();
        let keys: Vec<&str> = default.iter().map(|c| c.topology_key.as_str()).collect();
        assert_eq!(keys, [HOSTNAME_TOPOLOGY, ZONE_TOPOLOGY]);
        assert!(
            default
                .iter()
                .all(|c| c.when_unsatisfiable == "ScheduleAnyway")
        );
        let selector = default[0].label_selector.as_ref().unwrap();
        assert_eq!(
            selector.match_labels.as_ref().unwrap()["app.kubernetes.io/component"],
            "app"
        );

        let mut off = ShortenerSpec::default();
        off.app.pods.topology_spread_constraints = Some(vec![]);
        assert_eq!(spread_of(off), None);

        let mut own = ShortenerSpec::default();
        own.pods.topology_spread_constraints = Some(vec![TopologySpreadConstraint {
            max_skew: 2,
            topology_key: ZONE_TOPOLOGY.into(),
            when_unsatisfiable: "DoNotSchedule".into(),
            ..Default::default()
        }]);
        let set = spread_of(own).unwrap();
        assert_eq!((set.len(), set[0].max_skew), (1, 2));
        // Only the app has a default: the single-pod components have nothing to spread.
        for (key, template) in templates(ShortenerSpec::default()) {
            let spread = template.spec.unwrap().topology_spread_constraints;
            assert_eq!(spread.is_some(), key == "Deployment/links", "{key}");
        }
    }

    #[test]
    fn the_operators_own_labels_and_annotations_are_kept() {
        let options = PodOptions {
            labels: map(&[("app.kubernetes.io/component", "mine")]),
            annotations: map(&[(CONFIG_HASH_ANNOTATION, "mine")]),
            ..Default::default()
        };
        let mut labels = map(&[("app.kubernetes.io/component", "app")]);
        let mut annotations = map(&[(CONFIG_HASH_ANNOTATION, "digest")]);
        options.apply(&mut PodSpec::default(), &mut labels, &mut annotations, None);
        assert_eq!(labels["app.kubernetes.io/component"], "app");
        assert_eq!(annotations[CONFIG_HASH_ANNOTATION], "digest");
    }
}
