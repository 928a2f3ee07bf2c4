//! The corpus: every program under `flows/` (valid) and `tests/bad/` (invalid)
//! through every checking stage, as insta snapshots of what users see.
//!
//! Each bad program starts with `# expect: CODE, CODE, ...`: the codes of the
//! diagnostics it must produce, in source order; the test checks them exactly,
//! then snapshots the rendered messages so improvements show up as diffs.

use std::path::Path;

use flowc::diag::render;
use flowc::report::{check_json, check_table};

fn name_of(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

#[test]
fn valid_flows_check_clean() {
    insta::glob!("../flows", "*.flow", |path| {
        let source = std::fs::read_to_string(path).unwrap();
        let out = flowc::check(&source);
        let name = name_of(path);
        assert!(
            out.diagnostics.is_empty(),
            "{name}: {}",
            render(&out.diagnostics, &name, &source, false)
        );
        let v = out.verified.as_ref().expect("verified");
        let total: u128 = v.latents.iter().map(|z| z.size()).sum();
        assert_eq!(
            total,
            v.input.size(),
            "{name}: latents must add up to the input"
        );
        insta::assert_snapshot!("check", check_table(v));
        insta::assert_json_snapshot!("json", check_json(&out, &source));
    });
}

#[test]
fn bad_programs_report_expected_codes() {
    let mut mismatches = vec![];
    insta::glob!("bad", "*.flow", |path| {
        let bytes = std::fs::read(path).unwrap();
        let source = String::from_utf8_lossy(&bytes).into_owned();
        let expected: Vec<String> = source
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect:"))
            .expect("first line is `# expect: CODES`")
            .split(',')
            .map(|c| c.trim().to_string())
            .collect();
        let out = flowc::check_bytes(&bytes);
        let name = format!("{}.flow", name_of(path));
        let rendered = render(&out.diagnostics, &name, &source, false);
        let codes: Vec<String> = out
            .diagnostics
            .iter()
            .map(|d| d.code().to_string())
            .collect();
        if codes != expected {
            mismatches.push(format!(
                "{name}: expected {expected:?}, found {codes:?}\n{rendered}"
            ));
        }
        let has_error = out.diagnostics.has_errors();
        assert_eq!(
            out.ok(),
            !has_error,
            "{name}: ok() must agree with the diagnostics"
        );
        insta::assert_snapshot!("diagnostics", rendered);
    });
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
