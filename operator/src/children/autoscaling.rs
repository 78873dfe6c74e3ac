//! The app's HorizontalPodAutoscaler, when `spec.app.autoscaling` asks for one.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{Component, Instance};

/// The pods metric a custom-metrics adapter serves for `targetRequestsPerSecond`: the rate
/// of the app's `shortener_http_requests_total` per pod (docs/operator.md, "Autoscaling").
pub const REQUESTS_PER_SECOND_METRIC: &str = "shortener_http_requests_per_second";

/// The autoscaler of the app's Deployment; `None` without `spec.app.autoscaling`.
pub fn horizontal_pod_autoscaler(instance: &Instance<'_>) -> Option<HorizontalPodAutoscaler> {
    let autoscaling = instance.spec().app.autoscaling.as_ref()?;
    let mut metrics = vec![MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: "cpu".into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(autoscaling.target_cpu_utilization_percent),
                ..Default::default()
            },
        }),
        ..Default::default()
    }];
    if let Some(rps) = autoscaling.target_requests_per_second {
        metrics.push(MetricSpec {
            type_: "Pods".into(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier {
                    name: REQUESTS_PER_SECOND_METRIC.into(),
                    selector: None,
                },
                target: MetricTarget {
                    type_: "AverageValue".into(),
                    average_value: Some(Quantity(rps.to_string())),
                    ..Default::default()
                },
            }),
            ..Default::default()
        });
    }
    Some(HorizontalPodAutoscaler {
        metadata: instance.meta(instance.child_name(Component::App), Component::App),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: instance.child_name(Component::App),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(metrics),
            behavior: autoscaling.behavior.clone(),
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::testing::{assert_owned, shortener};
    use crate::crd::{AutoscalingSpec, ShortenerSpec};

    fn autoscaled(rps: Option<u32>) -> crate::crd::Shortener {
        let mut spec = ShortenerSpec::default();
        spec.app.autoscaling = Some(AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 6,
            target_cpu_utilization_percent: 70,
            target_requests_per_second: rps,
            behavior: None,
        });
        shortener(spec)
    }

    #[test]
    fn no_autoscaler_unless_asked() {
        let s = shortener(ShortenerSpec::default());
        assert!(horizontal_pod_autoscaler(&Instance::new(&s).unwrap()).is_none());
    }

    #[test]
    fn the_autoscaler_scales_the_app_on_cpu_and_requests() {
        let s = autoscaled(Some(800));
        let hpa = horizontal_pod_autoscaler(&Instance::new(&s).unwrap()).unwrap();
        assert_owned(&hpa.metadata, "app");
        let spec = hpa.spec.unwrap();
        assert_eq!(spec.scale_target_ref.kind, "Deployment");
        assert_eq!(spec.scale_target_ref.name, "links");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 6));
        let metrics = spec.metrics.unwrap();
        let cpu = metrics[0].resource.as_ref().unwrap();
        assert_eq!(cpu.target.average_utilization, Some(70));
        let rps = metrics[1].pods.as_ref().unwrap();
        assert_eq!(rps.metric.name, REQUESTS_PER_SECOND_METRIC);
        assert_eq!(rps.target.average_value, Some(Quantity("800".into())));
        let only_cpu = autoscaled(None);
        let hpa = horizontal_pod_autoscaler(&Instance::new(&only_cpu).unwrap()).unwrap();
        assert_eq!(hpa.spec.unwrap().metrics.unwrap().len(), 1);
    }

    #[test]
    fn the_behavior_is_passed_through() {
        use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};
        let mut s = autoscaled(None);
        let behavior = HorizontalPodAutoscalerBehavior {
            scale_down: Some(HPAScalingRules {
                stabilization_window_seconds: Some(30),
                ..Default::default()
            }),
            scale_up: None,
        };
        s.spec.app.autoscaling.as_mut().unwrap().behavior = Some(behavior.clone());
        let hpa = horizontal_pod_autoscaler(&Instance::new(&s).unwrap()).unwrap();
        assert_eq!(hpa.spec.unwrap().behavior, Some(behavior));
        let plain = autoscaled(None);
        let hpa = horizontal_pod_autoscaler(&Instance::new(&plain).unwrap()).unwrap();
        assert_eq!(hpa.spec.unwrap().behavior, None);
    }

    #[test]
    fn an_autoscaled_deployment_leaves_the_count_to_the_autoscaler() {
        let s = autoscaled(None);
        let instance = Instance::new(&s).unwrap();
        let config = crate::children::app::config_map(&instance);
        let deployment = crate::children::app::deployment(&instance, &config);
        assert_eq!(deployment.spec.unwrap().replicas, None);
    }
}
