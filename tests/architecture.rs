//! The shape the README's architecture section describes, kept true: dependencies point one way
//! (from the HTTP edge down to the server, the configuration and the metrics), no source file
//! outgrows one concern, and the section names every file it should.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The crate's modules, edge first. A module may use its own layer's leaves below it and any
/// lower layer, never a higher one, and never a sibling in the same layer (siblings are
/// independent: `health`, `consistency` and `route` know nothing of each other).
const LAYERS: &[&[&str]] = &[
    &["http"],
    &["query"],
    &["registry"],
    &["health", "consistency", "route"],
    &["server"],
    &[
        "config",
        "metrics",
        "error",
        "db_error",
        "fault",
        "clock",
        "prometheus",
    ],
];

/// Leaves of the bottom layer that others of it may use.
const SHARED_LEAVES: &[&str] = &["fault", "config", "clock"];

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Each source file with the top-level module it belongs to.
fn modules() -> Vec<(String, PathBuf, String)> {
    let src = root().join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str();
            let module = first.to_string_lossy().trim_end_matches(".rs").to_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            (module, path, text)
        })
        .collect()
}

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The modules of the crate that `text` uses (`crate::x` paths, docs and tests aside).
fn uses(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut used = Vec::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let tail = &rest[at + "crate::".len()..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            used.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    used
}

#[test]
fn dependencies_point_one_way() {
    let mut wrong = BTreeMap::new();
    for (module, path, text) in modules() {
        let Some(own) = layer(&module) else {
            assert_eq!(module, "lib", "{} is in no layer", path.display());
            continue;
        };
        for used in uses(&text) {
            if used == module {
                continue;
            }
            let Some(theirs) = layer(&used) else {
                continue;
            };
            let bottom = own == LAYERS.len() - 1 && SHARED_LEAVES.contains(&used.as_str());
            if theirs < own || (theirs == own && !bottom) {
                wrong
                    .entry(path.strip_prefix(root()).unwrap().display().to_string())
                    .or_insert_with(Vec::new)
                    .push(used);
            }
        }
    }
    assert!(wrong.is_empty(), "uses against the direction: {wrong:#?}");
}

#[test]
fn no_file_outgrows_one_concern() {
    let long: Vec<(String, usize)> = modules()
        .into_iter()
        .map(|(_, path, text)| (path.display().to_string(), text.lines().count()))
        .filter(|(_, lines)| *lines > 520)
        .collect();
    assert!(long.is_empty(), "{long:?}");
}

#[test]
fn the_readme_names_the_files_that_own_each_concern() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = &readme[readme.find("## Architecture").unwrap()..];
    let section = &section[..section[3..].find("\n## ").unwrap()];
    for file in [
        "http/layer.rs",
        "http/extract.rs",
        "query/attempt.rs",
        "registry/topology.rs",
        "registry/control.rs",
        "health/verdict.rs",
        "route/decide.rs",
        "route/schedule.rs",
        "route/intent.rs",
    ] {
        assert!(root().join("src").join(file).exists(), "{file} is gone");
        assert!(
            section.contains(file),
            "the architecture section does not name {file}"
        );
    }
}
