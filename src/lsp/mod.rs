//! `flowc lsp`: a Language Server Protocol server for `.flow` files on stdio.
//! A consumer of the front end, like `report`: each document goes through
//! [`crate::check`] (parse, resolve, graph, verify) and the editor features
//! read its output: the diagnostics of `flowc check`, shapes and parameter
//! counts per layer for hover and inlay hints, the syntax tree for names,
//! symbols and completion, and [`crate::fmt`] for formatting.
//!
//! Built on `lsp-server` and `lsp-types`, the crates rust-analyzer runs on:
//! a synchronous loop over a channel, no async runtime, since every answer
//! is computed from one document in microseconds to milliseconds.

mod analysis;
mod complete;
mod diagnostics;
mod hints;
mod hover;
mod names;
mod position;
mod server;
mod symbols;

pub use position::Lines;
pub use server::{capabilities, serve, Settings, DEBOUNCE};

/// Serves one editor on stdin and stdout until it shuts down.
pub fn stdio() -> server::Result<()> {
    let (connection, io) = lsp_server::Connection::stdio();
    serve(&connection)?;
    drop(connection); // closes the writer, so the I/O threads end
    io.join()?;
    Ok(())
}
