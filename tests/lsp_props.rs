//! The server never fails on any text: random valid programs, edited at
//! random places with fragments of the language (and of other text), with
//! every request at random positions after each edit. A panic in a handler
//! would come back as an error response, which fails the test.

use proptest::prelude::*;
use serde_json::json;

mod common;
mod lsp_client;
use common::valid_program;
use lsp_client::Client;

fn fragment() -> impl Strategy<Value = String> {
    let tokens = prop::sample::select(vec![
        "",
        "{",
        "}",
        "(",
        ")",
        "=",
        ",",
        "\n",
        " ",
        "#",
        "# é😀\n",
        "é",
        "😀",
        "\r",
        "\r\n",
        "\u{0}",
        "flow",
        "input",
        "image(3, 8, 8)",
        "vector(4)",
        "net",
        "block",
        "repeat 3 {",
        "coupling",
        "affine",
        "mask = ",
        "checkerboard(even)",
        "half(odd)",
        "net = n0",
        "squeeze",
        "factor_out",
        "logit(alpha = 0.05)",
        "reverse",
        "invconv",
        "b0(n0)",
        "b0",
        "n1",
        "99999999999999999999",
        "-1",
        "0.5",
    ]);
    prop::collection::vec(tokens, 0..4).prop_map(|t| t.concat())
}

/// An edit: the range from (line, character) to `len` characters further on
/// that line (positions past a line's end are clamped, as the protocol says),
/// replaced by a fragment; and where to ask the requests afterwards.
fn edit() -> impl Strategy<Value = ((u32, u32, u32), String, (u32, u32))> {
    (
        (0u32..30, 0u32..80, 0u32..6),
        fragment(),
        (0u32..30, 0u32..80),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_server_answers_every_request_after_random_edits(
        src in valid_program(),
        edits in prop::collection::vec(edit(), 1..8),
    ) {
        let uri = "file:///random.flow";
        let mut c = Client::start(json!({ "debounceMs": 0 }));
        c.open(uri, &src);
        c.diagnostics();
        let doc = json!({ "textDocument": { "uri": uri } });
        for (version, ((l, col, len), text, (pl, pc))) in edits.into_iter().enumerate() {
            c.change(uri, version as i32 + 2, [l, col, l, col + len], &text);
            for method in ["textDocument/hover", "textDocument/definition", "textDocument/references", "textDocument/completion"] {
                c.at(method, uri, pl, pc);
            }
            c.request("textDocument/documentSymbol", doc.clone());
            c.request("textDocument/formatting", json!({ "textDocument": { "uri": uri }, "options": { "tabSize": 4, "insertSpaces": true } }));
            c.request("textDocument/inlayHint", json!({ "textDocument": { "uri": uri }, "range": { "start": { "line": 0, "character": 0 }, "end": { "line": pl, "character": pc } } }));
        }
        // The last text's diagnostics, every range inside the text.
        let diags = c.diagnostics();
        for d in diags.as_array().unwrap() {
            prop_assert!(d["range"]["start"]["line"].as_u64().unwrap() <= d["range"]["end"]["line"].as_u64().unwrap());
        }
        c.shutdown();
    }
}
