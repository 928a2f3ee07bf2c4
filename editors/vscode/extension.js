// Starts `flowc lsp` for .flow files. The server does the work: diagnostics,
// hover, definitions, references, completion, outline, inlay hints and
// formatting; settings under `flowc.` are sent to it as they change.
const vscode = require('vscode');
const { LanguageClient } = require('vscode-languageclient/node');

let client;

function activate() {
  const config = vscode.workspace.getConfiguration('flowc');
  const server = { command: config.get('path', 'flowc'), args: ['lsp'] };
  const options = {
    documentSelector: [{ scheme: 'file', language: 'flow' }],
    initializationOptions: { inlayHints: config.get('inlayHints', true) },
    synchronize: { configurationSection: 'flowc' },
  };
  client = new LanguageClient('flowc', 'flowc', server, options);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
