//! What no input may do: panic the report on very long names, or pass the
//! check with a flow too large to run (LANGUAGE.md: `bad-argument` for "any
//! number too large to represent"; the limits are in ARCHITECTURE.md).

use flowc::diag::{render, Kind};
use flowc::report::check_table;
use flowc::verify::{self, VerifyError};
use flowc::Code;

#[test]
fn a_very_long_net_name_fits_the_check_table() {
    let name = "n".repeat(65_530);
    let src = format!(
        "flow f {{ input vector(2) net {name} = mlp(hidden = 2, layers = 1) \
         coupling affine(mask = alternate(even), net = {name}) \
         coupling affine(mask = alternate(odd), net = {name}) }}"
    );
    let out = flowc::check(&src);
    let table = check_table(out.verified.as_ref().expect("verifies"));
    let row = table.lines().find(|l| l.starts_with("0 ")).unwrap();
    assert!(
        row.contains(&format!("alternate(even) {name} ")),
        "{row:.80}"
    );
    // The rows line up: the header's `in` column starts where row 0's input does.
    let header = table.lines().find(|l| l.starts_with("# ")).unwrap();
    assert_eq!(
        header.find("  in").map(|i| i + 2),
        row.find("  2  ").map(|i| i + 2)
    );
    // A diagnostic that far along a line renders too, without the line.
    let bad = src.replace("alternate(odd)", "alternate(oddd)");
    let out = flowc::check(&bad);
    let text = render(&out.diagnostics, "f.flow", &bad, false);
    let column = bad.find("alternate(oddd)").unwrap() + 1;
    assert!(
        text.starts_with(&format!("error[bad-argument]: f.flow:1:{column}\n")),
        "{text:.200}"
    );
    assert!(
        text.contains("found `oddd`") && text.len() < 1000,
        "{text:.200}"
    );
}
