//! The protocol loop: documents in, diagnostics and answers out, on one
//! thread. Diagnostics are published at once when a document opens and,
//! while it is being edited, once it has been still for [`DEBOUNCE`];
//! requests are answered from the document's latest text.

use std::collections::HashMap;
use std::error::Error;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use lsp_server::{Connection, ErrorCode, Message, Notification, Request, RequestId, Response};
use lsp_types::notification::{
    DidChangeConfiguration, DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument,
    Notification as _, PublishDiagnostics,
};
use lsp_types::request::{
    Completion, DocumentSymbolRequest, Formatting, GotoDefinition, HoverRequest, InlayHintRequest,
    References, Request as _,
};
use lsp_types::{
    CompletionParams, CompletionResponse, DidChangeConfigurationParams,
    DidChangeTextDocumentParams, DidCloseTextDocumentParams, DidOpenTextDocumentParams,
    DocumentFormattingParams, DocumentSymbolParams, DocumentSymbolResponse, GotoDefinitionParams,
    GotoDefinitionResponse, Hover, HoverContents, HoverParams, HoverProviderCapability,
    InitializeParams, InlayHint, InlayHintParams, Location, MarkupContent, MarkupKind, OneOf,
    Position, PublishDiagnosticsParams, Range, ReferenceParams, ServerCapabilities,
    TextDocumentContentChangeEvent, TextDocumentPositionParams, TextDocumentSyncCapability,
    TextDocumentSyncKind, TextEdit, Url,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::analysis::Analysis;
use super::position::Lines;
use super::{complete, diagnostics, hints, hover, symbols};
use crate::parse::ast::Program;

pub type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// How long a document must stay unchanged before its diagnostics are
/// published, unless the client's settings say otherwise (`debounceMs`).
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Client settings (`initializationOptions`, or `flowc` in `workspace/didChangeConfiguration`).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Settings {
    /// Inlay hints with each layer's output shape.
    pub inlay_hints: bool,
    /// Milliseconds a document must stay unchanged before its diagnostics
    /// are published.
    pub debounce_ms: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            inlay_hints: true,
            debounce_ms: DEBOUNCE.as_millis() as u64,
        }
    }
}

pub fn capabilities() -> ServerCapabilities {
    ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(
            TextDocumentSyncKind::INCREMENTAL,
        )),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        definition_provider: Some(OneOf::Left(true)),
        references_provider: Some(OneOf::Left(true)),
        completion_provider: Some(lsp_types::CompletionOptions {
            trigger_characters: Some(vec!["(".into(), "=".into(), ",".into()]),
            ..Default::default()
        }),
        document_symbol_provider: Some(OneOf::Left(true)),
        document_formatting_provider: Some(OneOf::Left(true)),
        inlay_hint_provider: Some(OneOf::Left(true)),
        ..ServerCapabilities::default()
    }
}

/// Serves one client on `connection` until it shuts down.
pub fn serve(connection: &Connection) -> Result<()> {
    let (id, params) = connection.initialize_start()?;
    let params: InitializeParams = serde_json::from_value(params)?;
    let settings = params
        .initialization_options
        .and_then(|o| serde_json::from_value(o).ok())
        .unwrap_or_default();
    let result = serde_json::json!({
        "capabilities": capabilities(),
        "serverInfo": { "name": "flowc", "version": env!("CARGO_PKG_VERSION") },
    });
    connection.initialize_finish(id, result)?;
    Server {
        connection,
        documents: HashMap::new(),
        due: HashMap::new(),
        settings,
    }
    .run()
}

struct Document {
    text: String,
    /// `None` until a request or a publication needs it after a change.
    analysis: Option<Analysis>,
    /// The syntax tree of the latest text that had one: while a line is
    /// being typed the text rarely parses, and completion still offers the
    /// nets and blocks declared.
    last_program: Option<Program>,
}

impl Document {
    fn analysis(&mut self) -> &Analysis {
        if self.analysis.is_none() {
            let a = Analysis::new(self.text.clone());
            if let Some(p) = a.program() {
                self.last_program = Some(p.clone());
            }
            self.analysis = Some(a);
        }
        self.analysis.as_ref().expect("just made")
    }
}

struct Server<'c> {
    connection: &'c Connection,
    documents: HashMap<Url, Document>,
    /// Documents whose diagnostics are to be published, and when.
    due: HashMap<Url, Instant>,
    settings: Settings,
}

impl Server<'_> {
    fn run(mut self) -> Result<()> {
        loop {
            let next = self.due.values().min().copied();
            let received = match next {
                Some(deadline) => self.connection.receiver.recv_deadline(deadline),
                None => self
                    .connection
                    .receiver
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(Message::Request(req)) => {
                    if self.connection.handle_shutdown(&req)? {
                        return Ok(());
                    }
                    self.request(req)?;
                }
                Ok(Message::Notification(n)) => self.notification(n)?,
                Ok(Message::Response(_)) => {}
                Err(RecvTimeoutError::Timeout) => self.publish_due()?,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    }

    fn request(&mut self, req: Request) -> Result<()> {
        match req.method.as_str() {
            HoverRequest::METHOD => self.reply(req, Server::hover),
            GotoDefinition::METHOD => self.reply(req, Server::definition),
            References::METHOD => self.reply(req, Server::references),
            Completion::METHOD => self.reply(req, Server::completion),
            DocumentSymbolRequest::METHOD => self.reply(req, Server::symbols),
            Formatting::METHOD => self.reply(req, Server::formatting),
            InlayHintRequest::METHOD => self.reply(req, Server::inlay_hints),
            _ => self.send(Response::new_err(
                req.id,
                ErrorCode::MethodNotFound as i32,
                format!("flowc lsp does not handle `{}`", req.method),
            )),
        }
    }

    /// Answers a request with `answer` applied to its parameters. A panic
    /// (a bug: the tests hold every handler to never panicking) becomes an
    /// error response, so one bad request does not end the editor's session.
    fn reply<P: DeserializeOwned, R: Serialize>(
        &mut self,
        req: Request,
        answer: fn(&mut Self, P) -> R,
    ) -> Result<()> {
        let response = match serde_json::from_value::<P>(req.params) {
            Ok(params) => match catch_unwind(AssertUnwindSafe(|| answer(self, params))) {
                Ok(result) => Response::new_ok(req.id, result),
                Err(_) => internal_error(req.id),
            },
            Err(e) => Response::new_err(req.id, ErrorCode::InvalidParams as i32, e.to_string()),
        };
        self.send(response)
    }

    fn notification(&mut self, n: Notification) -> Result<()> {
        match n.method.as_str() {
            DidOpenTextDocument::METHOD => {
                let p: DidOpenTextDocumentParams = serde_json::from_value(n.params)?;
                let doc = p.text_document;
                self.set_text(doc.uri.clone(), doc.text);
                self.publish(&doc.uri)?;
            }
            DidChangeTextDocument::METHOD => {
                let p: DidChangeTextDocumentParams = serde_json::from_value(n.params)?;
                let uri = p.text_document.uri;
                let Some(doc) = self.documents.get(&uri) else {
                    return Ok(());
                };
                let text = p
                    .content_changes
                    .into_iter()
                    .fold(doc.text.clone(), apply_change);
                self.set_text(uri.clone(), text);
                let quiet = Duration::from_millis(self.settings.debounce_ms);
                self.due.insert(uri, Instant::now() + quiet);
            }
            DidCloseTextDocument::METHOD => {
                let p: DidCloseTextDocumentParams = serde_json::from_value(n.params)?;
                let uri = p.text_document.uri;
                self.documents.remove(&uri);
                self.due.remove(&uri);
                self.notify_diagnostics(uri, vec![])?;
            }
            DidChangeConfiguration::METHOD => {
                let p: DidChangeConfigurationParams = serde_json::from_value(n.params)?;
                if let Some(s) = p.settings.get("flowc").cloned() {
                    if let Ok(settings) = serde_json::from_value(s) {
                        self.settings = settings;
                    }
                }
            }
            _ => {} // `initialized`, `$/cancelRequest`, saves: nothing to do
        }
        Ok(())
    }

    fn set_text(&mut self, uri: Url, text: String) {
        let last_program = self.documents.remove(&uri).and_then(|d| d.last_program);
        let doc = Document {
            text,
            analysis: None,
            last_program,
        };
        self.documents.insert(uri, doc);
    }

    fn analysis(&mut self, uri: &Url) -> Option<&Analysis> {
        Some(self.documents.get_mut(uri)?.analysis())
    }

    fn publish_due(&mut self) -> Result<()> {
        let now = Instant::now();
        let due: Vec<Url> = self
            .due
            .iter()
            .filter(|(_, &t)| t <= now)
            .map(|(u, _)| u.clone())
            .collect();
        for uri in due {
            self.due.remove(&uri);
            self.publish(&uri)?;
        }
        Ok(())
    }

    fn publish(&mut self, uri: &Url) -> Result<()> {
        let found = catch_unwind(AssertUnwindSafe(|| {
            self.analysis(uri).map(|a| diagnostics::diagnostics(a, uri))
        }));
        match found {
            Ok(Some(list)) => self.notify_diagnostics(uri.clone(), list),
            Ok(None) => Ok(()),
            Err(_) => Ok(()), // a bug, already printed to stderr; keep serving
        }
    }

    fn notify_diagnostics(&self, uri: Url, diagnostics: Vec<lsp_types::Diagnostic>) -> Result<()> {
        let params = PublishDiagnosticsParams::new(uri, diagnostics, None);
        let n = Notification::new(PublishDiagnostics::METHOD.into(), params);
        self.connection.sender.send(n.into())?;
        Ok(())
    }

    fn send(&self, response: Response) -> Result<()> {
        self.connection.sender.send(response.into())?;
        Ok(())
    }

    /// The analysis of a position's document and the position's byte offset.
    fn at(&mut self, p: &TextDocumentPositionParams) -> Option<(&Analysis, usize)> {
        let a = self.analysis(&p.text_document.uri)?;
        let offset = a.lines.offset(&a.text, p.position);
        Some((a, offset))
    }

    fn hover(&mut self, p: HoverParams) -> Option<Hover> {
        let (a, offset) = self.at(&p.text_document_position_params)?;
        let (text, span) = hover::hover(a, offset)?;
        Some(Hover {
            contents: HoverContents::Markup(MarkupContent {
                kind: MarkupKind::Markdown,
                value: text,
            }),
            range: Some(a.lines.range(&a.text, span)),
        })
    }

    fn definition(&mut self, p: GotoDefinitionParams) -> Option<GotoDefinitionResponse> {
        let uri = p.text_document_position_params.text_document.uri.clone();
        let (a, offset) = self.at(&p.text_document_position_params)?;
        let target = &a.names.at(offset)?.target;
        let decl = a.names.declaration(target)?;
        let range = a.lines.range(&a.text, decl.span);
        Some(GotoDefinitionResponse::Scalar(Location::new(uri, range)))
    }

    fn references(&mut self, p: ReferenceParams) -> Option<Vec<Location>> {
        let uri = p.text_document_position.text_document.uri.clone();
        let with_declaration = p.context.include_declaration;
        let (a, offset) = self.at(&p.text_document_position)?;
        let target = &a.names.at(offset)?.target;
        let found = a
            .names
            .references(target)
            .filter(|o| with_declaration || !o.declares);
        Some(
            found
                .map(|o| Location::new(uri.clone(), a.lines.range(&a.text, o.span)))
                .collect(),
        )
    }

    fn completion(&mut self, p: CompletionParams) -> Option<CompletionResponse> {
        let doc = self
            .documents
            .get_mut(&p.text_document_position.text_document.uri)?;
        doc.analysis();
        let a = doc.analysis.as_ref()?;
        let offset = a.lines.offset(&a.text, p.text_document_position.position);
        let program = a.program().or(doc.last_program.as_ref());
        Some(CompletionResponse::Array(complete::complete(
            a, program, offset,
        )))
    }

    fn symbols(&mut self, p: DocumentSymbolParams) -> Option<DocumentSymbolResponse> {
        let a = self.analysis(&p.text_document.uri)?;
        Some(DocumentSymbolResponse::Nested(symbols::symbols(a)))
    }

    /// The whole document replaced by `flowc fmt`'s layout; nothing for a
    /// text with syntax errors (the diagnostics say why).
    fn formatting(&mut self, p: DocumentFormattingParams) -> Option<Vec<TextEdit>> {
        let text = &self.documents.get(&p.text_document.uri)?.text;
        let formatted = crate::fmt::format(text).ok()?;
        if &formatted == text {
            return Some(vec![]);
        }
        let lines = Lines::new(text);
        let whole = Range::new(Position::new(0, 0), lines.position(text, text.len()));
        Some(vec![TextEdit::new(whole, formatted)])
    }

    fn inlay_hints(&mut self, p: InlayHintParams) -> Option<Vec<InlayHint>> {
        if !self.settings.inlay_hints {
            return Some(vec![]);
        }
        let a = self.analysis(&p.text_document.uri)?;
        let from = a.lines.offset(&a.text, p.range.start);
        let to = a.lines.offset(&a.text, p.range.end);
        Some(hints::hints(a, from, to))
    }
}

fn internal_error(id: RequestId) -> Response {
    let message = "flowc lsp: internal error (a bug; please report it with the file)";
    Response::new_err(id, ErrorCode::InternalError as i32, message.into())
}

/// A change to a text: a range replaced, or (without a range) the whole text.
fn apply_change(mut text: String, change: TextDocumentContentChangeEvent) -> String {
    let Some(range) = change.range else {
        return change.text;
    };
    let lines = Lines::new(&text);
    let start = lines.offset(&text, range.start);
    let end = lines.offset(&text, range.end).max(start);
    text.replace_range(start..end, &change.text);
    text
}
