//! `flowc lsp` through the protocol, in process: every program of `flows/`
//! and of the invalid corpus `tests/bad/` opened, probed (hover, definition,
//! references, symbols, formatting) and snapshotted; then edits, debouncing,
//! completion, inlay hints and UTF-16 positions on small programs.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

mod lsp_client;
use lsp_client::{range_text, Client};

/// Settings for the tests: diagnostics published 20 ms after the last edit.
fn quick() -> Value {
    json!({ "debounceMs": 20 })
}

/// Identifier tokens of a line outside its comment: (column in UTF-16, word).
fn words(line: &str) -> Vec<(u32, String)> {
    let code = line.split('#').next().unwrap();
    let mut out = vec![];
    let mut word = String::new();
    let mut start = 0u32;
    let mut col = 0u32;
    for c in code.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' {
            if word.is_empty() {
                start = col;
            }
            word.push(c);
        } else if !word.is_empty() {
            if !word.starts_with(|c: char| c.is_ascii_digit()) {
                out.push((start, std::mem::take(&mut word)));
            }
            word.clear();
        }
        col += c.len_utf16() as u32;
    }
    out
}

fn diagnostics_text(diags: &Value) -> String {
    let mut out = String::new();
    for d in diags.as_array().unwrap() {
        let severity = match d["severity"].as_u64() {
            Some(1) => "error",
            Some(2) => "warning",
            other => panic!("severity {other:?}"),
        };
        let _ = writeln!(
            out,
            "{} {severity}[{}] {}",
            range_text(&d["range"]),
            d["code"].as_str().unwrap(),
            d["message"].as_str().unwrap()
        );
        for r in d["relatedInformation"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "    related {}: {}",
                range_text(&r["location"]["range"]),
                r["message"].as_str().unwrap()
            );
        }
    }
    out
}

/// Everything the server says about one file, as text.
fn probe(path: &Path) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
    let uri = format!(
        "file:///corpus/{}",
        path.file_name().unwrap().to_string_lossy()
    );
    let mut c = Client::start(quick());
    c.open(&uri, &text);
    let diags = c.diagnostics();
    let mut out = format!("## diagnostics\n{}", diagnostics_text(&diags));
    // The same codes as `flowc check`, in the same order.
    let check = flowc::check_bytes(&std::fs::read(path).unwrap());
    let codes: Vec<String> = check
        .diagnostics
        .iter()
        .map(|d| d.code().to_string())
        .collect();
    let sent: Vec<String> = diags
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes, sent, "{uri}");

    out.push_str("## hover on each line's first word\n");
    for (l, line) in text.lines().enumerate() {
        let Some((col, word)) = words(line).into_iter().next() else {
            continue;
        };
        let h = c.at("textDocument/hover", &uri, l as u32, col);
        if !h.is_null() {
            let _ = writeln!(
                out,
                "{}:{} {word} [{}]\n{}\n",
                l + 1,
                col + 1,
                range_text(&h["range"]),
                h["contents"]["value"].as_str().unwrap()
            );
        }
    }
    out.push_str("## definitions and references of names\n");
    for (l, line) in text.lines().enumerate() {
        for (col, word) in words(line) {
            let d = c.at("textDocument/definition", &uri, l as u32, col);
            if d.is_null() {
                continue;
            }
            let refs = c.at("textDocument/references", &uri, l as u32, col);
            let refs: Vec<String> = refs
                .as_array()
                .unwrap()
                .iter()
                .map(|r| range_text(&r["range"]))
                .collect();
            let _ = writeln!(
                out,
                "{}:{} {word} -> {}; references {}",
                l + 1,
                col + 1,
                range_text(&d["range"]),
                refs.join(" ")
            );
        }
    }
    out.push_str("## symbols\n");
    let symbols = c.request(
        "textDocument/documentSymbol",
        json!({ "textDocument": { "uri": uri } }),
    );
    outline(&symbols, 0, &mut out);
    out.push_str("## formatting\n");
    let edits = c.request("textDocument/formatting", json!({ "textDocument": { "uri": uri }, "options": { "tabSize": 4, "insertSpaces": true } }));
    match edits.as_array() {
        None => out.push_str("(not formatted: syntax errors)\n"),
        Some(e) if e.is_empty() => out.push_str("(already formatted)\n"),
        Some(e) => out.push_str(e[0]["newText"].as_str().unwrap()),
    }
    // An edit: a line inserted at the top moves every diagnostic down one line.
    c.change(&uri, 2, [0, 0, 0, 0], "\n");
    let moved = c.diagnostics();
    let lines = |v: &Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| d["range"]["start"]["line"].as_u64().unwrap())
            .collect()
    };
    let expected: Vec<u64> = lines(&diags).iter().map(|l| l + 1).collect();
    assert_eq!(lines(&moved), expected, "{uri}: diagnostics after an edit");
    c.shutdown();
    out
}

fn outline(symbols: &Value, depth: usize, out: &mut String) {
    for s in symbols.as_array().into_iter().flatten() {
        let detail = s["detail"]
            .as_str()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}{} {}{detail}",
            "  ".repeat(depth),
            range_text(&s["range"]),
            s["name"].as_str().unwrap()
        );
        outline(&s["children"], depth + 1, out);
    }
}

#[test]
fn every_valid_flow_through_the_protocol() {
    insta::glob!("../flows", "*.flow", |path| {
        insta::assert_snapshot!("lsp", probe(path));
    });
}

#[test]
fn every_invalid_program_through_the_protocol() {
    insta::glob!("bad", "*.flow", |path| {
        insta::assert_snapshot!("lsp", probe(path));
    });
}

const SMALL: &str = "flow small {
    input vector(4)
    net m = mlp(hidden = 8, layers = 2)
    block pair(n) {
        coupling affine(mask = half(even), net = n)
        coupling affine(mask = half(odd), net = n)
    }
    repeat 2 {
        pair(m)
        reverse
    }
}
";

#[test]
fn edits_are_applied_and_diagnostics_debounced() {
    let uri = "file:///small.flow";
    let mut c = Client::start(json!({ "debounceMs": 300 }));
    c.open(uri, SMALL);
    assert_eq!(c.diagnostics(), json!([]), "opens clean, published at once");
    // `hidden = 8` to `hidden = 0`, one character at a time through `80`.
    c.change(uri, 2, [2, 26, 2, 26], "0"); // hidden = 80
    c.change(uri, 3, [2, 25, 2, 26], ""); // hidden = 0
    c.change(uri, 4, [9, 8, 9, 15], "squeeze"); // a squeeze on a vector
    assert_eq!(
        c.diagnostics_within(Duration::from_millis(150)),
        None,
        "nothing before the edits settle"
    );
    let diags = c.diagnostics();
    let text = diagnostics_text(&diags);
    assert_eq!(
        text,
        "3:26-3:27 error[bad-argument] `hidden` must be an integer from 1 to 2^31 - 1, found 0\n\
         10:9-10:16 error[shape] squeeze needs an image; its input here is a vector of 4 features\n",
    );
    assert_eq!(
        c.diagnostics_within(Duration::from_millis(500)),
        None,
        "one publication for the burst"
    );
    // A full-text change.
    c.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": uri, "version": 5 }, "contentChanges": [{ "text": SMALL }] }),
    );
    assert_eq!(c.diagnostics(), json!([]));
    c.shutdown();
}

#[test]
fn hover_definition_and_references_on_a_small_flow() {
    let uri = "file:///small.flow";
    let mut c = Client::start(quick());
    c.open(uri, SMALL);
    c.diagnostics();
    let hover = |c: &mut Client, l, col| {
        c.at("textDocument/hover", uri, l, col)["contents"]["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // A layer of a block expanded twice: both expansions, with shapes and parameters.
    insta::assert_snapshot!(hover(&mut c, 4, 8), @r"
    ```flow
    coupling affine(mask = half(even), net = n)
    ```

    2 expansions:
    1. vector(4) → vector(4) (188 parameters)
    2. vector(4) → vector(4) (188 parameters)
    ");
    insta::assert_snapshot!(hover(&mut c, 3, 11), @r"
    ```flow
    block pair(n) {
        coupling affine(mask = half(even), net = n)
        coupling affine(mask = half(odd), net = n)
    }
    ```

    expanded 2 times
    ");
    insta::assert_snapshot!(hover(&mut c, 8, 13), @r"
    ```flow
    net m = mlp(hidden = 8, layers = 2)
    ```

    used by 4 couplings (each coupling gets its own weights)
    ");
    // The block's parameter: its definition is the parameter, not a net.
    let d = c.at("textDocument/definition", uri, 4, 49);
    assert_eq!(range_text(&d["range"]), "4:16-4:17");
    let refs = c.at("textDocument/references", uri, 2, 8);
    let refs: Vec<String> = refs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| range_text(&r["range"]))
        .collect();
    assert_eq!(refs, ["3:9-3:10", "9:14-9:15"]);
    c.shutdown();
}

/// A net named by couplings and by a `factor_out(net = N)`: both counted;
/// the split layer's hover gives its net's parameters.
#[test]
fn hover_counts_split_priors_among_a_net_s_uses() {
    let uri = "file:///split.flow";
    let src = "flow s {
    input vector(6)
    prior normal(learned)
    net m = mlp(hidden = 4, layers = 1)
    coupling affine(mask = half(even), net = m)
    coupling affine(mask = half(odd), net = m)
    factor_out(net = m)
}
";
    let mut c = Client::start(quick());
    c.open(uri, src);
    assert_eq!(c.diagnostics(), json!([]));
    let hover = |c: &mut Client, l, col| {
        c.at("textDocument/hover", uri, l, col)["contents"]["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    insta::assert_snapshot!(hover(&mut c, 3, 8), @r"
    ```flow
    net m = mlp(hidden = 4, layers = 1)
    ```

    used by 2 couplings and 1 factor_out (each layer gets its own weights)
    ");
    // Linear(3 -> 4) and Linear(4 -> 6).
    insta::assert_snapshot!(hover(&mut c, 6, 6), @r"
    ```flow
    factor_out(net = m)
    ```

    vector(6) → vector(3) (46 parameters)
    ");
    let refs = c.at("textDocument/references", uri, 3, 8);
    let refs: Vec<String> = refs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| range_text(&r["range"]))
        .collect();
    assert_eq!(refs, ["4:9-4:10", "5:46-5:47", "6:45-6:46", "7:22-7:23"]);
    c.shutdown();
}

#[test]
fn completion_by_context() {
    let uri = "file:///c.flow";
    let valid = "flow c {\n    input image(3, 8, 8)\n    net r = resnet(blocks = 1, features = 8)\n    block b(p) {\n        coupling affine(mask = checkerboard(even), net = p)\n    }\n    b(r)\n}\n";
    // Being typed: the text does not parse, the names of its last parse are offered.
    let typing = "flow c {\n    input image(3, 8, 8)\n    net r = resnet(blocks = 1, features = 8)\n    block b(p) {\n        coupling affine(mask = , net = )\n    }\n    \n    logit(\n    net s = \n    net t = resnet(\n    factor_out(\n    prior \n    coupling spline(\n    coupling \n}\n";
    let mut c = Client::start(quick());
    c.open(uri, valid);
    c.diagnostics();
    c.notify("textDocument/didChange", json!({ "textDocument": { "uri": uri, "version": 2 }, "contentChanges": [{ "text": typing }] }));
    let mut out = String::new();
    for (what, l, col) in [
        ("net kind", 8, 12),
        ("resnet arguments", 9, 19),
        ("mask", 4, 31),
        ("net in a block", 4, 39),
        ("coupling arguments", 4, 24),
        ("line start", 6, 4),
        ("logit arguments", 7, 10),
        ("factor_out arguments", 10, 15),
        ("priors", 11, 10),
        ("in a comment", 0, 8),
        ("spline arguments", 12, 20),
        ("coupling kind", 13, 13),
    ] {
        let items = c.at("textDocument/completion", uri, l, col);
        let items: Vec<String> = items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                format!(
                    "{} ({})",
                    i["label"].as_str().unwrap(),
                    i["detail"].as_str().unwrap()
                )
            })
            .collect();
        let _ = writeln!(out, "{what}:\n  {}", items.join("\n  "));
    }
    insta::assert_snapshot!(out);
    c.shutdown();
}

#[test]
fn inlay_hints_follow_the_setting() {
    let uri = "file:///small.flow";
    let whole = json!({ "textDocument": { "uri": uri }, "range": { "start": { "line": 0, "character": 0 }, "end": { "line": 99, "character": 0 } } });
    let mut c = Client::start(quick());
    c.open(uri, SMALL);
    c.diagnostics();
    let hints = c.request("textDocument/inlayHint", whole.clone());
    let hints: Vec<String> = hints
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{}:{} {}",
                h["position"]["line"].as_u64().unwrap() + 1,
                h["position"]["character"].as_u64().unwrap() + 1,
                h["label"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        hints,
        [
            "5:52 → vector(4)",
            "6:51 → vector(4)",
            "9:16 → vector(4)",
            "10:16 → vector(4)",
            "11:6 → vector(4)"
        ]
    );
    c.notify(
        "workspace/didChangeConfiguration",
        json!({ "settings": { "flowc": { "inlayHints": false } } }),
    );
    assert_eq!(
        c.request("textDocument/inlayHint", whole.clone()),
        json!([])
    );
    c.shutdown();
    let mut off = Client::start(json!({ "inlayHints": false }));
    off.open(uri, SMALL);
    assert_eq!(off.request("textDocument/inlayHint", whole), json!([]));
    off.shutdown();
}

#[test]
fn positions_are_utf16() {
    // `é` is one UTF-16 unit in two bytes, `😀` two units in four bytes.
    let uri = "file:///u.flow";
    let text = "flow u { # é😀\n    input vector(4) # 😀😀\n    reverse 😀 reverse\n}\n";
    let mut c = Client::start(quick());
    c.open(uri, text);
    let d = c.diagnostics();
    assert_eq!(d[0]["code"], "syntax");
    assert_eq!(range_text(&d[0]["range"]), "3:13-3:15", "{d}");
    // A valid flow with non-ASCII comments: hover finds the layer after them.
    let text = "flow u { # é😀\n    input vector(4) # 😀😀\n    reverse # é\n}\n";
    c.change(uri, 2, [0, 0, 99, 0], text);
    let d = c.diagnostics();
    assert_eq!(d.as_array().unwrap().len(), 1);
    assert_eq!(
        d[0]["code"], "untransformed",
        "only the warning of a flow without couplings"
    );
    let h = c.at("textDocument/hover", uri, 2, 6);
    assert_eq!(range_text(&h["range"]), "3:5-3:12");
    c.shutdown();
}

#[test]
fn unknown_documents_and_methods_are_answered() {
    let mut c = Client::start(quick());
    assert_eq!(
        c.at("textDocument/hover", "file:///none.flow", 0, 0),
        Value::Null
    );
    let e = c.try_request(
        "textDocument/codeLens",
        json!({ "textDocument": { "uri": "file:///none.flow" } }),
    );
    assert!(e.unwrap_err().starts_with("-32601"));
    c.shutdown();
}

/// What a client sends that is not the protocol, or a client that goes
/// away mid-session, ends `flowc lsp` with status 2 and a message naming it.
#[test]
fn stdio_names_a_malformed_or_vanished_client() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let run = |input: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowc"))
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(b"garbage\r\n\r\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("malformed header: \"garbage\""), "{err}");
    let (code, err) = run(b"Content-Length: 5\r\n\r\n{\"a\":");
    assert_eq!(code, Some(2));
    assert!(err.contains("malformed LSP payload"), "{err}");
    let (code, err) = run(b"");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("closed the connection before `shutdown`"),
        "{err}"
    );
}
