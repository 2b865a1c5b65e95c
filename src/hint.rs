//! What to do about an error whose cause is known from its text: one
//! sentence appended where errors are shown (the reporter, spec
//! diagnostics). A leaf: reads strings, imports nothing of the crate.

/// The hint for an error message, when its cause is one we know.
pub fn for_message(text: &str) -> Option<String> {
    extension(text)
}

/// DuckDB asked for an extension that is not loaded: duckhour never
/// downloads one, so the spec must name it (`extensions:`) and the file
/// must be where DuckDB keeps extensions.
fn extension(text: &str) -> Option<String> {
    const NEEDS: [&str; 2] = ["required extension '", "install and load the extension '"];
    let at = NEEDS
        .iter()
        .find_map(|n| text.find(n).map(|i| i + n.len()))?;
    let name: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if name.is_empty() {
        return None;
    }
    Some(format!(
        "the SQL uses DuckDB's `{name}` extension: add `extensions: [{name}]` to pipelines.yaml \
         (`validate` then says where DuckDB looks for `{name}.duckdb_extension`; nothing is downloaded)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_extension_is_named_with_the_spec_key() {
        let text = "template `local_hours.sql` failed: Extension Autoloading Error: An error occurred \
                    while trying to automatically install the required extension 'icu':\nCan't find the home directory";
        let h = for_message(text).unwrap();
        assert!(
            h.contains("add `extensions: [icu]` to pipelines.yaml"),
            "{h}"
        );
        assert_eq!(
            for_message("DuckDB: Binder Error: column x not found"),
            None
        );
        assert_eq!(for_message("the required extension '' x"), None);
    }
}
