//! Installing as a newcomer does: the operator chart, then an example, then traffic through
//! the Ingress controller.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use reqwest::StatusCode;

use crate::cluster::{Result, eventually, kubectl, must};
use crate::stack::{
    FIRST_START, admin_key, check_first_start, is_ready, redirects_by_pod, wait_shortener_ready,
};
use crate::traffic::{Api as Service, Link};
use crate::{OPERATOR_NAMESPACE, RELEASE, Real, ensure};

/// `helm install` as docs/operator.md gives it; the operator then runs from the image
/// `scripts/images.sh` loaded under the chart's default reference, holds the Lease, and
/// passes its probes.
pub async fn the_operator_runs_in_the_cluster_from_its_image(real: &'static Real) -> Result {
    let chart = real.root.join("charts/shortener-operator");
    must(
        "helm",
        &[
            "upgrade",
            "--install",
            RELEASE,
            &chart.to_string_lossy(),
            "-n",
            OPERATOR_NAMESPACE,
            "--create-namespace",
            // The node runs the Prometheus Operator: its ServiceMonitor too, as teams do.
            "--set",
            "serviceMonitor.enabled=true",
            "--wait",
            "--timeout",
            "5m",
        ],
        None,
    )?;
    let deployments: Api<Deployment> = Api::namespaced(real.client.clone(), OPERATOR_NAMESPACE);
    let deployment = deployments.get(RELEASE).await?;
    let image = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let pods = crate::stack::pods_labelled(
        &real.client,
        OPERATOR_NAMESPACE,
        "app.kubernetes.io/name=shortener-operator",
    )
    .await?;
    let ready: Vec<_> = pods.iter().filter(|p| is_ready(p)).collect();
    ensure!(
        ready.len() == 1,
        "{} operator pods Ready, want 1",
        ready.len()
    );
    let pod = ready[0];
    let status = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    let running_image = status
        .and_then(|s| s.first())
        .map(|c| c.image.clone())
        .unwrap_or_default();
    ensure!(
        running_image.ends_with(&image),
        "the operator runs {running_image}, the chart names {image}"
    );
    let name = pod.name_any();
    crate::stack::operator_lease_holder(
        &real.client,
        "the operator's pod holding the Lease",
        Duration::from_secs(120),
        |holder| holder == name,
    )
    .await?;
    println!("    operator {name} runs {running_image} and holds the Lease");
    Ok(())
}

/// `kubectl apply -f manifests/examples/minimal.yaml` as it is written; the stack becomes
/// Ready through its real probes and serves through the Ingress.
pub async fn the_minimal_example_serves_through_the_ingress(real: &'static Real) -> Result {
    let manifest = real.root.join("manifests/examples/minimal.yaml");
    kubectl(&["apply", "-f", &manifest.to_string_lossy()])?;
    let started = std::time::Instant::now();
    wait_shortener_ready(&real.client, "default", "links", FIRST_START).await?;
    println!(
        "    Ready {:.0}s after the apply",
        started.elapsed().as_secs_f64()
    );
    check_first_start(&real.client, "default", "links", 3).await?;
    let key = admin_key(&real.client, "default", "links").await?;
    let api = Service::new(&real.ingress_url, None, &key)?;
    serves(real, &api, true, "default", "links", 3).await
}

/// Through one entry point: a user and links created with the admin key, every redirect
/// answered 302 to its target by every app pod, and every one of them counted. Through a
/// `public` one (an Ingress, a Gateway), `/metrics` must not answer.
pub async fn serves(
    real: &Real,
    api: &Service,
    public: bool,
    ns: &str,
    instance: &str,
    replicas: usize,
) -> Result {
    api.wait_serving().await?;
    ensure!(
        !public || !api.metrics_exposed().await?,
        "/metrics answers through {}: the service's metrics are public",
        api.base()
    );
    let user = api.create_user(&format!("real-{ns}")).await?;
    let mut links: Vec<Link> = Vec::new();
    for i in 0..3 {
        links.push(
            api.create_link(user, &format!("https://example.com/{ns}/{i}"))
                .await?,
        );
    }
    let before: BTreeMap<String, f64> = redirects_by_pod(&real.client, ns, instance)
        .await?
        .into_iter()
        .collect();
    // Rounds until every replica has answered: the controller learns the pods' endpoints a
    // moment after they are Ready, so the first rounds may all go to one of them.
    let mut answered = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut rounds = 0;
    let (served, after) = loop {
        for _ in 0..10 {
            rounds += 1;
            for link in &links {
                let (status, location) = api.follow(&link.code).await?;
                ensure!(
                    status == StatusCode::FOUND
                        && location.as_deref() == Some(link.target.as_str()),
                    "round {rounds}: GET /{} answered {status} {location:?}",
                    link.code
                );
                *answered.entry(link.code.clone()).or_insert(0u64) += 1;
            }
        }
        let after = redirects_by_pod(&real.client, ns, instance).await?;
        let served: Vec<String> = after
            .iter()
            .filter(|(pod, count)| *count > before.get(pod).copied().unwrap_or(0.0))
            .map(|(pod, _)| pod.clone())
            .collect();
        if served.len() == replicas || std::time::Instant::now() > deadline {
            break (served, after);
        }
    };
    ensure!(
        served.len() == replicas,
        "{} of {replicas} app pods answered {} redirects: {after:?} (before: {before:?})",
        served.len(),
        rounds * links.len()
    );
    api.expect_counts(&answered, &links).await?;
    println!(
        "    {} redirects through {}, answered by {} pods, all counted",
        rounds * links.len(),
        api.base(),
        served.len()
    );
    Ok(())
}

/// Deleting the Shortener collects every child through its owner reference and keeps the
/// database's volume and, with it, the superuser's Secret (the password that volume's database
/// was initialised with). `minimal.yaml` applied again then starts on that volume: Ready, and
/// a link made before the deletion still redirects, its earlier clicks still counted.
pub async fn deleting_the_shortener_keeps_the_volume(real: &'static Real) -> Result {
    let outcome = made_again_on_the_kept_volume(real).await;
    // The node has room for one stack at a time (1 CPU, 1 GiB): removed whatever happened,
    // so that a failure here does not fail the tests after it for want of room.
    outcome.and(remove_links_and_its_volume())
}

async fn made_again_on_the_kept_volume(real: &'static Real) -> Result {
    let key = admin_key(&real.client, "default", "links").await?;
    let before = Service::new(&real.ingress_url, None, &key)?;
    let user = before.create_user("kept-volume").await?;
    let link = before
        .create_link(user, "https://example.com/kept-volume")
        .await?;
    let (status, _) = before.follow(&link.code).await?;
    ensure!(
        status == StatusCode::FOUND,
        "/{} answered {status}",
        link.code
    );
    let counted = before.counted(&link, 1).await?;

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(real.client.clone(), "default");
    let instance = ListParams::default().labels("app.kubernetes.io/instance=links");
    let kept: Vec<String> = claims
        .list(&instance)
        .await?
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    ensure!(!kept.is_empty(), "no claim of default/links to keep");
    crate::stack::delete_links()?;
    eventually("every child of default/links gone but the superuser's Secret", Duration::from_secs(180), || async {
        let left = kubectl(&[
            "-n", "default", "get",
            "deployments,statefulsets,services,ingresses,jobs,pods,configmaps,secrets,networkpolicies",
            "-l", "app.kubernetes.io/instance=links", "-o", "name",
        ])
        .map_err(|e| e.to_string())?;
        if left.trim() == "secret/links-db" {
            Ok(())
        } else {
            Err(format!("left: {}", left.trim().replace('\n', ", ")))
        }
    })
    .await?;
    let now: Vec<String> = claims
        .list(&instance)
        .await?
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    ensure!(now == kept, "claims were {kept:?}, now {now:?}");

    let manifest = real.root.join("manifests/examples/minimal.yaml");
    kubectl(&["apply", "-f", &manifest.to_string_lossy()])?;
    wait_shortener_ready(&real.client, "default", "links", FIRST_START).await?;
    let key = admin_key(&real.client, "default", "links").await?;
    let after = Service::new(&real.ingress_url, None, &key)?;
    after.wait_serving().await?;
    after
        .redirects_and_counts_on(&link, counted, "on the kept volume")
        .await?;
    println!(
        "    made again on the kept volume: /{} still redirects, {} clicks counted",
        link.code,
        counted + 1
    );
    Ok(())
}

/// The default namespace's Shortener `links`, then what it leaves: its claim and the
/// superuser's Secret kept with it.
pub fn remove_links_and_its_volume() -> Result {
    crate::stack::delete_links()?;
    kubectl(&[
        "-n",
        "default",
        "delete",
        "pvc,secret",
        "-l",
        "app.kubernetes.io/instance=links",
        "--wait=false",
    ])?;
    Ok(())
}

/// A certificate for `host` in `dir` (`tls.key`, `tls.crt`), as a platform's issuer makes one:
/// signed by a CA of its own (`ca.crt`, returned), for that name only, not a CA itself.
fn self_signed_certificate(dir: &std::path::Path, host: &str) -> Result<std::path::PathBuf> {
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    must(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=shortener test CA",
            "-keyout",
            &path("ca.key"),
            "-out",
            &path("ca.crt"),
        ],
        None,
    )?;
    must(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={host}"),
            "-keyout",
            &path("tls.key"),
            "-out",
            &path("tls.csr"),
        ],
        None,
    )?;
    std::fs::write(
        dir.join("tls.ext"),
        format!(
            "subjectAltName=DNS:{host}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
        ),
    )?;
    must(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &path("tls.csr"),
            "-CA",
            &path("ca.crt"),
            "-CAkey",
            &path("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &path("tls.ext"),
            "-out",
            &path("tls.crt"),
        ],
        None,
    )?;
    Ok(dir.join("ca.crt"))
}

/// `manifests/examples/full.yaml` in its namespace: every field set, its own host, TLS from
/// a Secret the platform provides (here a self-signed certificate made with openssl). Plain
/// HTTP through the Ingress is redirected to HTTPS for that host (ingress-nginx's
/// `ssl-redirect`, which Traefik's provider follows); the API, the redirects and the counts
/// are checked through the app's Service (the node's entry point has no TLS listener yet).
pub async fn the_full_example_serves_through_the_ingress(real: &'static Real) -> Result {
    let outcome = full_example(real).await;
    // The node has room for one stack at a time (1 CPU, 1 GiB): removed whatever happened.
    let removed = kubectl(&[
        "delete",
        "namespace",
        "shortener",
        "--wait=true",
        "--timeout=180s",
    ]);
    outcome.and(removed.map(|_| ()))
}

async fn full_example(real: &'static Real) -> Result {
    crate::stack::fresh_namespace("shortener")?;
    let dir = std::env::temp_dir().join("shortener-real-tls");
    std::fs::create_dir_all(&dir)?;
    let (key_file, cert_file) = (dir.join("tls.key"), dir.join("tls.crt"));
    let ca_file = self_signed_certificate(&dir, "sho.rt")?;
    kubectl(&[
        "-n",
        "shortener",
        "create",
        "secret",
        "tls",
        "sho-rt-tls",
        &format!("--key={}", key_file.to_string_lossy()),
        &format!("--cert={}", cert_file.to_string_lossy()),
    ])?;
    let manifest = real.root.join("manifests/examples/full.yaml");
    kubectl(&["apply", "-f", &manifest.to_string_lossy()])?;
    wait_shortener_ready(&real.client, "shortener", "links", FIRST_START).await?;
    check_first_start(&real.client, "shortener", "links", 3).await?;

    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?;
    eventually(
        "HTTP for sho.rt redirected to HTTPS by the Ingress",
        Duration::from_secs(120),
        || async {
            let response = plain
                .get(format!("{}/some-code", real.ingress_url))
                .header(reqwest::header::HOST, "sho.rt")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if response.status().is_redirection() && location.starts_with("https://sho.rt/") {
                Ok(())
            } else {
                Err(format!("{} {location:?}", response.status()))
            }
        },
    )
    .await?;

    // HTTPS through the Ingress with the example's certificate, checked for its host.
    let tls_url = real
        .ingress_tls_url
        .as_deref()
        .ok_or("SHORTENER_INGRESS_TLS_URL is not set: eval \"$(scripts/cluster.sh env)\"")?;
    let address: std::net::SocketAddr = tls_url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("SHORTENER_INGRESS_TLS_URL={tls_url}: {e}"))?;
    let key = admin_key(&real.client, "shortener", "links").await?;
    let api = Service::over_tls("sho.rt", address, &std::fs::read(&ca_file)?, &key)?;
    serves(real, &api, true, "shortener", "links", 3).await?;
    Ok(())
}
