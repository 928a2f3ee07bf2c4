//! An in-process client of `flowc lsp`: the server runs on a thread over
//! `lsp_server::Connection::memory()`, and the tests speak the protocol to it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::thread::JoinHandle;
use std::time::Duration;

use lsp_server::{Connection, Message, Notification, Request, RequestId, Response};
use serde_json::{json, Value};

/// How long a test waits for any one message before it fails.
const PATIENCE: Duration = Duration::from_secs(20);

pub struct Client {
    conn: Connection,
    server: Option<JoinHandle<()>>,
    next_id: i32,
    /// Notifications that arrived while waiting for a response.
    queued: VecDeque<Notification>,
}

impl Client {
    /// Starts a server and completes the `initialize` handshake.
    pub fn start(options: Value) -> Client {
        let (server, conn) = Connection::memory();
        let handle = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(move || flowc::lsp::serve(&server).expect("the server ends cleanly"))
            .unwrap();
        let mut c = Client {
            conn,
            server: Some(handle),
            next_id: 0,
            queued: VecDeque::new(),
        };
        let init = c.request(
            "initialize",
            json!({ "processId": null, "rootUri": null, "capabilities": {}, "initializationOptions": options }),
        );
        assert_eq!(init["serverInfo"]["name"], "flowc");
        c.notify("initialized", json!({}));
        c
    }

    /// A request's result; panics on an error response.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        match self.try_request(method, params.clone()) {
            Ok(v) => v,
            Err(e) => panic!("{method} {params}: error response {e}"),
        }
    }

    pub fn try_request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = RequestId::from(self.next_id);
        let req = Request::new(id.clone(), method.into(), params);
        self.conn.sender.send(req.into()).unwrap();
        loop {
            match self.recv() {
                Message::Response(Response {
                    id: rid,
                    result,
                    error,
                }) if rid == id => {
                    return match error {
                        Some(e) => Err(format!("{} {}", e.code, e.message)),
                        None => Ok(result.unwrap_or(Value::Null)),
                    }
                }
                Message::Notification(n) => self.queued.push_back(n),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        let n = Notification::new(method.into(), params);
        self.conn.sender.send(n.into()).unwrap();
    }

    fn recv(&mut self) -> Message {
        self.conn
            .receiver
            .recv_timeout(PATIENCE)
            .expect("the server answers in time")
    }

    /// The next `textDocument/publishDiagnostics`: its diagnostics.
    pub fn diagnostics(&mut self) -> Value {
        loop {
            let n = match self.queued.pop_front() {
                Some(n) => n,
                None => match self.recv() {
                    Message::Notification(n) => n,
                    other => panic!("unexpected {other:?}"),
                },
            };
            if n.method == "textDocument/publishDiagnostics" {
                return n.params["diagnostics"].clone();
            }
        }
    }

    /// Whether a publication arrives within `wait`.
    pub fn diagnostics_within(&mut self, wait: Duration) -> Option<Value> {
        if let Some(n) = self.queued.pop_front() {
            return Some(n.params["diagnostics"].clone());
        }
        match self.conn.receiver.recv_timeout(wait) {
            Ok(Message::Notification(n)) => Some(n.params["diagnostics"].clone()),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => None,
        }
    }

    pub fn open(&mut self, uri: &str, text: &str) {
        self.notify(
            "textDocument/didOpen",
            json!({ "textDocument": { "uri": uri, "languageId": "flow", "version": 1, "text": text } }),
        );
    }

    /// Replaces `range` (`[l0, c0, l1, c1]`) with `text`.
    pub fn change(&mut self, uri: &str, version: i32, range: [u32; 4], text: &str) {
        let [l0, c0, l1, c1] = range;
        self.notify(
            "textDocument/didChange",
            json!({
                "textDocument": { "uri": uri, "version": version },
                "contentChanges": [{
                    "range": { "start": { "line": l0, "character": c0 }, "end": { "line": l1, "character": c1 } },
                    "text": text
                }]
            }),
        );
    }

    pub fn at(&mut self, method: &str, uri: &str, line: u32, character: u32) -> Value {
        let mut params = position(uri, line, character);
        if method == "textDocument/references" {
            params["context"] = json!({ "includeDeclaration": true });
        }
        self.request(method, params)
    }

    /// `shutdown`, `exit`, and the server's thread ended.
    pub fn shutdown(mut self) {
        assert_eq!(self.request("shutdown", Value::Null), Value::Null);
        self.notify("exit", Value::Null);
        self.server
            .take()
            .unwrap()
            .join()
            .expect("the server thread ends without a panic");
    }
}

pub fn position(uri: &str, line: u32, character: u32) -> Value {
    json!({
        "textDocument": { "uri": uri },
        "position": { "line": line, "character": character }
    })
}

/// `L:C-L:C` (1-based lines and columns, as editors show them).
pub fn range_text(r: &Value) -> String {
    let p = |p: &Value| {
        format!(
            "{}:{}",
            p["line"].as_u64().unwrap() + 1,
            p["character"].as_u64().unwrap() + 1
        )
    };
    format!("{}-{}", p(&r["start"]), p(&r["end"]))
}
