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
    let served = serve(&connection);
    drop(connection); // closes the writer, so the I/O threads end
    match served {
        Ok(()) => Ok(io.join()?),
        // The reader thread stopped, so joining it cannot block: its error
        // says what the client sent (a malformed header, bad JSON), or the
        // client closed stdin without `shutdown` and `exit`.
        Err(e) if reader_stopped(&*e) => match io.join() {
            Ok(()) => Err("the client closed the connection before `shutdown` and `exit`".into()),
            Err(read) => Err(format!("reading the client's messages: {read}").into()),
        },
        // The reader may still be waiting on stdin: report without joining.
        Err(e) => Err(e),
    }
}

fn reader_stopped(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    e.downcast_ref::<lsp_server::ProtocolError>()
        .is_some_and(|p| p.channel_is_disconnected())
}
