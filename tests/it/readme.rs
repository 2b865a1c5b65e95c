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

/// The README's worked example of adding a model runs as printed: its SQL
/// file and YAML lines, added to the demo pipeline, validate and compute
/// the day's maximum hourly NO2 per station.
#[test]
fn readme_model_example_runs_as_printed() {
    let readme = std::fs::read_to_string(crate::util::repo().join("README.md")).unwrap();
    let section = readme.split("### Writing a model").nth(1).unwrap();
    let block = |lang: &str| -> String {
        let start = section.find(&format!("```{lang}\n")).unwrap() + lang.len() + 4;
        section[start..].split("```").next().unwrap().to_owned()
    };
    let (sql, yaml) = (block("sql"), block("yaml"));
    assert!(section.contains("`sql/no2_daily_max.sql`"), "{section}");
    let spec = std::fs::read_to_string(crate::util::repo().join("pipelines.yaml")).unwrap();
    // After the demo's last model (the end of the file).
    let ws = crate::util::Ws::new(&format!("{}\n{yaml}", spec.trim_end()));
    ws.write("sql/no2_daily_max.sql", &sql);
    ws.run(&["validate"]).ok();
    let out = ws
        .run(&["run", "demo", "--now", "2026-11-22T00:00:00Z"])
        .ok();
    assert!(out.stdout.contains("model no2_daily_max"), "{out:?}");
    // Berlin's 2026-11-20 starts at 23:00 UTC the day before: the sample's
    // first 23 hours are on it, the last one on the 21st.
    let got = ws.query(
        "demo.duckdb",
        "SELECT station, day::VARCHAR, max_hourly, n_valid_hours FROM no2_daily_max ORDER BY ALL",
    );
    let want = ws.query(
        "demo.duckdb",
        "SELECT station, CASE WHEN epoch_us(hour_start) // 3600000000 % 24 = 23 THEN '2026-11-21' ELSE '2026-11-20' END AS d, max(avg), count(*) \
         FROM pollutant_hourly WHERE pollutant = 'no2' AND n_minutes >= 45 GROUP BY ALL ORDER BY ALL",
    );
    assert_eq!(got, want);
}
