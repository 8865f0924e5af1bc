//! The Helm chart's CRDs are generated from the Rust types; this fails when they
//! drift (regenerate with `cargo run -p kafscale-operator -- crd --dir helm/kafscale/crds`).

use kafscale_operator::crd::crd_files;

#[test]
fn chart_crds_match_the_rust_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/kafscale/crds");
    let files = crd_files().expect("CRD yaml");
    assert_eq!(files.len(), 2);
    for (name, yaml) in files {
        let path = dir.join(&name);
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            stored == yaml,
            "{} differs from the generated CRD: run `cargo run -p kafscale-operator -- crd --dir helm/kafscale/crds`",
            path.display()
        );
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .expect("helm/kafscale/crds")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    assert_eq!(
        present,
        [
            "kafscaleclusters.kafscale.io.yaml",
            "kafscaletopics.kafscale.io.yaml"
        ],
        "helm/kafscale/crds holds exactly the generated CRDs"
    );
}
