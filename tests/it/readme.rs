//! The README's spec reference names every key the spec types accept, and
//! nothing else: docs that match behaviour.

use std::collections::BTreeSet;

/// `pub name:` fields of the serde structs in src/spec/types.rs (renames applied).
fn spec_keys() -> BTreeSet<String> {
    let src = std::fs::read_to_string(crate::util::repo().join("src/spec/types.rs")).unwrap();
    let mut keys = BTreeSet::new();
    let mut rename: Option<String> = None;
    for line in src.lines().map(str::trim) {
        if let Some(r) = line.strip_prefix("#[serde(rename = \"") {
            rename = r.split('"').next().map(str::to_owned);
        } else if let Some(rest) = line.strip_prefix("pub ") {
            if let Some((name, _)) = rest.split_once(':') {
                if !name.contains(' ') && !name.contains('(') {
                    keys.insert(rename.take().unwrap_or_else(|| name.to_owned()));
                }
            }
        }
    }
    keys
}

/// Keys in the first column of README's reference tables.
fn readme_keys() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(crate::util::repo().join("README.md")).unwrap();
    let section = readme
        .split("## Spec reference")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn readme_reference_matches_the_spec_types() {
    let (code, docs) = (spec_keys(), readme_keys());
    assert!(code.len() > 40, "{code:?}");
    let undocumented: Vec<_> = code.difference(&docs).collect();
    let stale: Vec<_> = docs.difference(&code).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "undocumented {undocumented:?}, stale {stale:?}"
    );
}
