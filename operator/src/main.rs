use kube::CustomResourceExt;
fn main() {
    print!(
        "{}",
        serde_yaml::to_string(&shortener_operator::crd::Shortener::crd()).unwrap_or_default()
    );
}
