//! The Helm chart's CRDs are generated from the Rust types; this fails when they
//! drift (regenerate with `cargo run -p kafscale-operator -- crd --dir helm/kafscale/crds`).

use kafscale_operator::crd::crd_files;

#[test]
fn chart_crds_match_the_rust_types() {
    // The directory at run time: a test binary reused from another checkout through a
    // shared CARGO_TARGET_DIR must read this one, not the one it was compiled in.
    let dir = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../helm/kafscale/crds");
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
