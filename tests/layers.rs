//! The modules form layers, and each imports only the layers below it: no module imports
//! a module that imports it back. Read from the sources, so a new import that breaks the
//! order fails `make test`.

use std::collections::BTreeSet;
use std::path::Path;

/// Bottom to top.
const LAYERS: &[&str] = &[
    "sync",      // a poisoned lock's data
    "status",    // vocabulary: Kind, State, Event, Status
    "error",     // vocabulary: the one error type
    "config",    // configuration, loading, validation
    "metrics",   // takes a &Status; recorded by health and the manager
    "health",    // state machine, engine, task
    "connector", // the object-safe Connector trait
    "pool",      // Pool, Backend, adapter, guard, shared handles
    "backend",   // Redis, etcd
    "manager",   // the registry
    "axum",      // integrations
    "testkit",
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == module)
}

/// `crate::x` paths in code (comments and doc comments left out).
fn imports(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                found.insert(name);
            }
        }
    }
    found
}

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn each_module_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let mut problems = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" {
            continue;
        }
        let Some(own) = rank(&top) else {
            problems.push(format!("{}: module {top:?} is in no layer", rel.display()));
            continue;
        };
        for dep in imports(&std::fs::read_to_string(&file).unwrap()) {
            if dep == top {
                continue;
            }
            match rank(&dep) {
                Some(r) if r < own => {}
                _ => problems.push(format!(
                    "{}: `{top}` imports `crate::{dep}`, which is not below it",
                    rel.display()
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The names `src/lib.rs` re-exports at the crate root, crates left out.
fn root_names() -> Vec<String> {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let mut names = Vec::new();
    let mut rest = lib.as_str();
    while let Some(i) = rest.find("\npub use ") {
        rest = &rest[i + "\npub use ".len()..];
        let end = rest.find(';').unwrap();
        let item = &rest[..end];
        match item.find('{') {
            Some(open) => names.extend(
                item[open + 1..item.rfind('}').unwrap()]
                    .split(',')
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty()),
            ),
            // `pub use bb8;` re-exports a crate; `pub use a::B;` one name.
            None if item.contains("::") => names.push(item.rsplit("::").next().unwrap().to_owned()),
            None => {}
        }
    }
    names
}

#[test]
fn the_crate_root_holds_the_everyday_names_only() {
    let names = root_names();
    assert!(
        (20..=35).contains(&names.len()),
        "{} names at the crate root (at most 35): {names:?}",
        names.len()
    );
    // The backend-writing tier and the plumbing stay out of it.
    for tier in [
        "Backend",
        "Bb8Manager",
        "Origin",
        "Cause",
        "Tracked",
        "Stamped",
    ] {
        assert!(!names.iter().any(|n| n == tier), "{tier} is at the root");
    }
}
