//! The editor files: the TextMate grammar knows every reserved word of the
//! language (a new layer keyword fails here until it is highlighted), and the
//! VS Code extension points at the grammar and language it defines.

use std::path::Path;

use serde_json::Value;

fn json(path: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_grammar_highlights_every_reserved_word() {
    let grammar = json("editors/flow.tmLanguage.json");
    assert_eq!(grammar["scopeName"], "source.flow");
    let text = grammar.to_string();
    for word in flowc::parse::RESERVED {
        // As an alternative of a `\b(...)\b` keyword pattern.
        let alternative = [
            format!("({word}|"),
            format!("|{word}|"),
            format!("|{word})"),
            format!("({word})"),
        ];
        assert!(
            alternative.iter().any(|a| text.contains(a.as_str())),
            "`{word}` is not highlighted"
        );
    }
    for mask in ["checkerboard", "channel", "alternate", "half"] {
        assert!(text.contains(mask), "mask `{mask}`");
    }
}

#[test]
fn the_vscode_extension_uses_the_grammar() {
    let package = json("editors/vscode/package.json");
    let g = &package["contributes"]["grammars"][0];
    assert_eq!(g["scopeName"], "source.flow");
    assert_eq!(g["language"], package["contributes"]["languages"][0]["id"]);
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("editors/vscode")
        .join(g["path"].as_str().unwrap());
    let same = std::fs::read(path).unwrap()
        == std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("editors/flow.tmLanguage.json"),
        )
        .unwrap();
    assert!(
        same,
        "the extension's grammar is editors/flow.tmLanguage.json"
    );
    assert!(package["dependencies"]["vscode-languageclient"].is_string());
}
