//! `flowc lsp` with a real client: Neovim, headless, configured by
//! `editors/nvim/flowc.lua` (the README's snippet) to start the server on
//! `*.flow`. It opens an invalid program; the diagnostics must arrive with
//! the codes and lines `flowc check` gives, then a hover must show a layer's
//! shapes. Skipped, saying so, where `nvim` is not installed (`.ci/run`
//! installs Debian's `neovim`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SCRIPT: &str = r#"
local out = {}
local arrived = vim.wait(20000, function() return #vim.diagnostic.get(0) > 0 end, 50)
if not arrived then table.insert(out, 'no diagnostics') end
for _, d in ipairs(vim.diagnostic.get(0)) do
  local code = d.code or (d.user_data and d.user_data.lsp and d.user_data.lsp.code)
  table.insert(out, string.format('%s %d', tostring(code), d.lnum + 1))
end
local params = {
  textDocument = vim.lsp.util.make_text_document_params(),
  position = { line = tonumber(os.getenv('HOVER_LINE')), character = tonumber(os.getenv('HOVER_COLUMN')) },
}
local answers = vim.lsp.buf_request_sync(0, 'textDocument/hover', params, 10000)
for _, a in pairs(answers or {}) do
  if a.result then table.insert(out, 'hover: ' .. a.result.contents.value) end
end
vim.fn.writefile(vim.split(table.concat(out, '\n'), '\n'), os.getenv('OUT'))
vim.cmd('qa!')
"#;

fn nvim_found() -> bool {
    Command::new("nvim")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn neovim_shows_diagnostics_and_hover() {
    if !nvim_found() {
        println!("SKIPPED: `nvim` is not installed (Debian: apt-get install neovim); the real-client test did not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = std::fs::read_to_string("tests/bad/many_errors_mixed.flow").unwrap();
    let file = dir.path().join("mixed.flow");
    std::fs::write(&file, &source).unwrap();
    let script = dir.path().join("test.lua");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = dir.path().join("out.txt");
    let init = Path::new(env!("CARGO_MANIFEST_DIR")).join("editors/nvim/flowc.lua");
    let mut child = Command::new("nvim")
        .args(["--headless", "-n", "-i", "NONE", "-u"])
        .arg(&init)
        .arg(&file)
        .arg("-c")
        .arg(format!("luafile {}", script.display()))
        .env("FLOWC", env!("CARGO_BIN_EXE_flowc"))
        .env("OUT", &out)
        .env("HOVER_LINE", "8") // the first `squeeze`
        .env("HOVER_COLUMN", "4")
        .env("XDG_STATE_HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .current_dir(dir.path())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("nvim did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = std::fs::read_to_string(&out).expect("the script wrote its findings");
    let mut lines: Vec<&str> = got.lines().collect();
    let hover_at = lines
        .iter()
        .position(|l| l.starts_with("hover: "))
        .expect("a hover answer");
    let hover = lines.split_off(hover_at).join("\n");
    // The same codes and lines as `flowc check`.
    let check = flowc::check(&source);
    let mut want: Vec<String> = check
        .diagnostics
        .iter()
        .map(|d| {
            format!(
                "{} {}",
                d.code(),
                flowc::diag::line_col(&source, d.span.start).0
            )
        })
        .collect();
    let mut seen: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    want.sort();
    seen.sort();
    assert_eq!(seen, want, "{got}");
    assert_eq!(want.len(), 5);
    assert!(
        hover.contains("squeeze") && hover.contains("3x10x10 → 12x5x5"),
        "{hover}"
    );
}
