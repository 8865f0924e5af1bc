//! The broker's layers import only downward (docs/architecture.md, "Layers").
//! This test reads every source file and fails on an import of a higher layer,
//! so the rule holds by construction rather than by convention.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top-level modules of `broker/src`, by layer, lowest first. A module may use
/// its own layer and the ones below it.
const LAYERS: &[(&str, &[&str])] = &[
    ("leaf", &["errors", "obs", "placement"]),
    ("runtime", &["runtime", "io", "clock", "admission"]),
    ("cluster", &["metadata", "security"]),
    ("log", &["partition"]),
    ("groups", &["groups"]),
    ("shard", &["shard", "router", "settings", "start_error"]),
    ("kafka", &["handlers", "connection", "server"]),
    ("ops", &["http", "control"]),
    ("top", &["config", "security_config", "boot", "lib", "main"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading broker/src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a file names as `crate::m` (also inside `use crate::{a, b}`),
/// outside its unit-test module.
fn imports(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            for item in inner.split(',') {
                let name = item.trim().split("::").next().unwrap_or("");
                if !name.is_empty() {
                    out.insert(name.to_string());
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn layers_import_only_downward() {
    // The directory at run time: a test binary reused from another checkout through a
    // shared CARGO_TARGET_DIR must read this one, not the one it was compiled in.
    let src = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 50, "found only {} source files", files.len());
    let mut violations = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("a file name")
            .trim_end_matches(".rs")
            .to_string();
        let Some(own) = layer_of(&top) else {
            violations.push(format!("{}: module {top} is in no layer", rel.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("reading a source file");
        for m in imports(&text) {
            match layer_of(&m) {
                None => violations.push(format!("{}: crate::{m} is in no layer", rel.display())),
                Some(l) if l > own => violations.push(format!(
                    "{} ({}) imports crate::{m} ({})",
                    rel.display(),
                    LAYERS[own].0,
                    LAYERS[l].0
                )),
                Some(_) => {}
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_checker_sees_grouped_and_nested_imports() {
    let found = imports(
        "use crate::{shard::Shard, obs};\nfn f() { crate::http::x(); }\n#[cfg(test)]\nmod tests { use crate::boot; }",
    );
    let want: BTreeSet<String> = ["http", "obs", "shard"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, want);
}
