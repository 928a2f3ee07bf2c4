//! `flowc fmt`: the layout on small cases, the command line, and two
//! properties on random valid programs with comments and odd spacing strewn
//! in: formatting is idempotent, and the formatted text is the same program
//! (the same graph, layer by layer with shapes, and the same comments).

use std::process::{Command, Stdio};

use flowc::fmt::format;
use proptest::prelude::*;

mod common;
use common::cli::flowc;
use common::{graph_summary, valid_program};

#[test]
fn lays_out_one_item_per_line_with_comments_in_place() {
    let src = "# head\nflow f{input vector(4) # the data\n\n\n net m=mlp(hidden=8,layers=2)\n\
               block b(){ reverse # flip\n }\n repeat 2{coupling affine(mask=half(even),net=m) reverse}\n\
               b() logit # end\n # last\n}  # after\n";
    let want = "# head\nflow f {\n    input vector(4)  # the data\n\n    net m = mlp(hidden = 8, layers = 2)\n\
                \x20   block b {\n        reverse  # flip\n    }\n    repeat 2 {\n\
                \x20       coupling affine(mask = half(even), net = m)\n        reverse\n    }\n\
                \x20   b\n    logit  # end\n    # last\n}  # after\n";
    let got = format(src).unwrap();
    assert_eq!(got, want, "\n{got}");
    assert_eq!(format(&got).unwrap(), got, "idempotent");
}

#[test]
fn a_comment_inside_an_item_moves_before_it() {
    let src =
        "flow f {\n    input vector(4)\n    net m = mlp(hidden = 8, # wide\n layers = 2)\n}\n";
    let want =
        "flow f {\n    input vector(4)\n    # wide\n    net m = mlp(hidden = 8, layers = 2)\n}\n";
    assert_eq!(format(src).unwrap(), want);
}

#[test]
fn syntax_errors_are_not_formatted() {
    assert!(format("flow f { input vector(4) squeeze( }").is_err());
    assert!(format("").is_err());
    assert!(
        format("flow f { reverse }").is_err(),
        "no input: a syntax error"
    );
}

#[test]
fn the_command_line_checks_rewrites_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let messy = dir.path().join("messy.flow");
    std::fs::write(&messy, "flow f{input vector(2)  reverse # r\n}").unwrap();
    let path = messy.to_str().unwrap();
    let (code, out, _) = flowc(&["fmt", "--check", path]);
    assert_eq!(
        (code, out.trim()),
        (1, format!("{path}: not formatted").as_str())
    );
    let (code, _, _) = flowc(&["fmt", path]);
    assert_eq!(code, 0);
    let tidy = "flow f {\n    input vector(2)\n    reverse  # r\n}\n";
    assert_eq!(std::fs::read_to_string(&messy).unwrap(), tidy);
    assert_eq!(flowc(&["fmt", "--check", path]).0, 0);
    // A syntax error: the file is left alone and the error printed.
    let broken = dir.path().join("broken.flow");
    std::fs::write(&broken, "flow f { input vector(2) squeeze( }").unwrap();
    let (code, _, err) = flowc(&["fmt", broken.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("error[syntax]"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&broken).unwrap(),
        "flow f { input vector(2) squeeze( }"
    );
    // No files: stdin to stdout.
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowc"))
        .arg("fmt")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"flow f{input vector(2)  reverse # r\n}")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), tidy);
}

/// A valid program with comments on their own lines, after items and
/// inside argument lists, blank lines, and the spacing of each line
/// changed, as `picks` say.
fn messy(src: &str, picks: &[(u8, u8)]) -> String {
    let mut out = String::new();
    for (k, line) in src.lines().enumerate() {
        let (a, b) = picks.get(k).copied().unwrap_or((0, 0));
        if a % 5 == 1 {
            out.push_str(&format!("  # note {k} é😀\n"));
        }
        if a % 7 == 2 {
            out.push('\n');
        }
        let line = match b % 5 {
            0 => line.to_string(),
            1 => line.trim().replace(" = ", "=").replace(", ", ","),
            2 => format!("\t{}   ", line.replace('(', " ( ")),
            // A comment inside an argument list, which moves before its item.
            3 => line.replacen(", ", ", # inside\n", 1),
            _ => line.trim().to_string(),
        };
        out.push_str(&line);
        if a % 3 == 0 {
            out.push_str(&format!(" # after {k}"));
        }
        out.push('\n');
    }
    out
}

fn comments(text: &str) -> Vec<String> {
    flowc::parse::comments(text)
        .iter()
        .map(|c| text[c.start..c.end].trim_end().to_string())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn formatting_is_idempotent_and_keeps_the_program(
        src in valid_program(),
        picks in prop::collection::vec((any::<u8>(), any::<u8>()), 0..64),
    ) {
        let src = messy(&src, &picks);
        let once = format(&src).map_err(|e| TestCaseError::fail(format!("{src}\n{e:?}")))?;
        let twice = format(&once).unwrap();
        prop_assert_eq!(&twice, &once, "not idempotent:\n{}\n---\n{}", src, once);
        prop_assert_eq!(graph_summary(&src), graph_summary(&once), "{}\n---\n{}", src, once);
        prop_assert_eq!(comments(&src), comments(&once), "{}\n---\n{}", src, once);
    }
}
