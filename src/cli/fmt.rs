//! `flowc fmt [FILE...] [--check]`: files rewritten in place (only where the
//! layout changes), stdin to stdout without files. A file with syntax errors
//! is left alone and its errors printed as `check` prints them.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{emit, read_source, EXIT_ERRORS, EXIT_IO};
use crate::diag::{self, Diagnostics, Kind};

pub fn fmt(files: &[PathBuf], check: bool) -> ExitCode {
    if files.is_empty() {
        return stdin(check);
    }
    let mut worst = ExitCode::SUCCESS;
    for path in files {
        let code = file(path, check);
        if code != ExitCode::SUCCESS && worst != ExitCode::from(EXIT_IO) {
            worst = code;
        }
    }
    worst
}

fn file(path: &Path, check: bool) -> ExitCode {
    let bytes = match read_source(path) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let name = path.display().to_string();
    let Some((source, formatted)) = format(&bytes, &name) else {
        return ExitCode::from(EXIT_ERRORS);
    };
    if formatted == source {
        return ExitCode::SUCCESS;
    }
    if check {
        println!("{name}: not formatted");
        return ExitCode::from(EXIT_ERRORS);
    }
    match std::fs::write(path, formatted) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write {name}: {e}");
            ExitCode::from(EXIT_IO)
        }
    }
}

fn stdin(check: bool) -> ExitCode {
    let mut bytes = vec![];
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("error: cannot read stdin: {e}");
        return ExitCode::from(EXIT_IO);
    }
    let Some((source, formatted)) = format(&bytes, "<stdin>") else {
        return ExitCode::from(EXIT_ERRORS);
    };
    match check {
        true if formatted != source => {
            println!("<stdin>: not formatted");
            ExitCode::from(EXIT_ERRORS)
        }
        true => ExitCode::SUCCESS,
        false => emit(&formatted),
    }
}

/// The text and its layout, or `None` after printing its syntax errors.
fn format(bytes: &[u8], name: &str) -> Option<(String, String)> {
    let (source, result) = match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_string(), crate::fmt::format(text)),
        // Not UTF-8: the front end's message for it.
        Err(_) => {
            let (_, found) = crate::parse::parse_bytes(bytes);
            (String::from_utf8_lossy(bytes).into_owned(), Err(found))
        }
    };
    match result {
        Ok(formatted) => Some((source, formatted)),
        Err(found) => {
            let diags = Diagnostics::from_stage(found, Kind::Parse);
            let color = std::io::stderr().is_terminal();
            eprint!("{}", diag::render(&diags, name, &source, color));
            eprintln!("{name}: not formatted: the text has syntax errors");
            None
        }
    }
}
