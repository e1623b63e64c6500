//! The docs are walked: every ```` ```sh walk ```` block of README.md and docs/operating.md is
//! run in order, as an operator would type it, against the real binaries on a fresh data
//! directory per document, and fails when a command's exit status or the output differs from the
//! ```` ```text output ```` block that follows it.
//!
//! The format (documented in docs/operating.md, "How this page is tested"):
//! - a `sh walk` block holds commands, one a line; `# …` lines are comments, and a trailing
//!   `  # exits N` says the command is meant to exit N (else 0). A command ending in ` &` runs
//!   in the background (a `serve`) until the walk ends; the walk waits for its API.
//! - a `text output` block right after it lists lines that must appear, in this order, in what
//!   the block's commands printed (stdout and stderr as written; a background command's log). Spaces
//!   are compared collapsed, and `…` matches any text.
//!
//! The walk runs in the workspace root with `rack-manager` on PATH, `RACK_DATA_DIR` set to a
//! fresh directory and `RACK_LISTEN=127.0.0.1:0` (so walks never collide on a port).

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use images::build::workspace_root;

#[derive(Debug)]
struct Step {
    doc_line: usize,
    commands: Vec<String>,
    expected: Vec<String>,
}

/// The walk blocks of `markdown`, each with the output patterns that follow it.
fn steps(markdown: &str) -> Vec<Step> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut steps: Vec<Step> = Vec::new();
    let mut i = 0;
    let block = |from: usize| -> (Vec<String>, usize) {
        let mut body = Vec::new();
        let mut j = from;
        while j < lines.len() && lines[j].trim() != "```" {
            body.push(lines[j].to_owned());
            j += 1;
        }
        (body, j + 1)
    };
    while i < lines.len() {
        if lines[i].trim() == "```sh walk" {
            let (commands, next) = block(i + 1);
            let mut step = Step { doc_line: i + 1, commands, expected: Vec::new() };
            let mut k = next;
            while k < lines.len() && lines[k].trim().is_empty() {
                k += 1;
            }
            i = next;
            if k < lines.len() && lines[k].trim() == "```text output" {
                let (expected, after) = block(k + 1);
                step.expected = expected;
                i = after;
            }
            steps.push(step);
        } else {
            i += 1;
        }
    }
    steps
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `line` matches `pattern` (spaces collapsed, `…` any text).
fn matches(pattern: &str, line: &str) -> bool {
    let (pattern, line) = (collapse(pattern), collapse(line));
    let parts: Vec<&str> = pattern.split('…').map(str::trim).collect();
    let mut rest = line.as_str();
    for (n, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        match rest.find(part) {
            Some(at) if n > 0 || at == 0 => rest = &rest[at + part.len()..],
            _ => return false,
        }
    }
    parts.last().is_some_and(|last| last.is_empty() || rest.is_empty())
}

struct Walk {
    root: PathBuf,
    data: tempfile::TempDir,
    path: String,
    background: Vec<(Child, PathBuf)>,
}

impl Walk {
    fn new() -> Walk {
        let bin_dir = Path::new(common::BIN).parent().expect("the binary's directory").to_owned();
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        Walk { root: workspace_root(), data: tempfile::tempdir().expect("a temp dir"), path, background: Vec::new() }
    }

    fn command(&self, line: &str) -> Command {
        let mut command = Command::new("sh");
        command
            // stderr into stdout's pipe: both in the order they were written, as on a terminal.
            .args(["-c", &format!("exec 2>&1; {line}")])
            .current_dir(&self.root)
            .env("PATH", &self.path)
            .env("RACK_DATA_DIR", self.data.path())
            .env("RACK_LISTEN", "127.0.0.1:0")
            .env_remove("RACK_MANAGER")
            .env_remove("RACK_TOKEN")
            .stdin(Stdio::null());
        command
    }

    /// Runs one step; returns what it printed.
    fn run(&mut self, doc: &str, step: &Step) -> String {
        let mut printed = String::new();
        for line in step.commands.iter().map(|l| l.trim()).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (command, comment) = line.split_once("  #").map_or((line, ""), |(c, r)| (c.trim(), r.trim()));
            let expected_code: i32 =
                comment.strip_prefix("exits ").and_then(|n| n.split_whitespace().next()?.parse().ok()).unwrap_or(0);
            if let Some(command) = command.strip_suffix('&') {
                let log = self.data.path().join(format!("background-{}.log", self.background.len()));
                let file = std::fs::File::create(&log).expect("a log file");
                let child = self
                    .command(command.trim())
                    .stdout(file.try_clone().expect("a second handle"))
                    .stderr(file)
                    .spawn()
                    .expect("sh starts");
                self.background.push((child, log.clone()));
                let address = self.data.path().join("address");
                let deadline = Instant::now() + Duration::from_secs(30);
                while !address.exists() {
                    let so_far = std::fs::read_to_string(&log).unwrap_or_default();
                    assert!(
                        Instant::now() < deadline,
                        "{doc}:{}: `{command}` did not start serving:\n{so_far}",
                        step.doc_line
                    );
                    thread::sleep(Duration::from_millis(50));
                }
                thread::sleep(Duration::from_millis(200));
                printed.push_str(&std::fs::read_to_string(&log).unwrap_or_default());
                continue;
            }
            let output = self.command(command).output().expect("sh runs");
            let text =
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            assert_eq!(
                output.status.code(),
                Some(expected_code),
                "{doc}:{}: `{command}` exited {:?}, the doc says {expected_code}; it printed:\n{text}",
                step.doc_line,
                output.status.code()
            );
            printed.push_str(&text);
        }
        printed
    }
}

impl Drop for Walk {
    fn drop(&mut self) {
        for (child, _) in &mut self.background {
            common::kill(child.id());
            let _ = child.wait();
        }
        for pid in common::processes_mentioning(&self.data.path().display().to_string()) {
            common::kill(pid);
        }
    }
}

fn walk(doc: &str) {
    let text = std::fs::read_to_string(workspace_root().join(doc)).expect("the doc");
    let steps = steps(&text);
    assert!(!steps.is_empty(), "{doc} has no `sh walk` blocks");
    let mut walk = Walk::new();
    for step in &steps {
        let printed = walk.run(doc, step);
        let lines: Vec<&str> = printed.lines().collect();
        let mut from = 0;
        for pattern in step.expected.iter().filter(|p| !p.trim().is_empty()) {
            match lines[from..].iter().position(|line| matches(pattern, line)) {
                Some(at) => from += at + 1,
                None => panic!(
                    "{doc}:{}: the doc shows `{pattern}`, but the commands printed (from line {from}):\n{printed}",
                    step.doc_line
                ),
            }
        }
    }
}

#[test]
fn the_patterns_match_as_documented() {
    assert!(matches("hello-1 d1 hello … running", "hello-1  d1   hello  aarch64  qemu  running"));
    assert!(matches("hint: … the limit: …", "hint: vCPUs are the limit: 64 free"));
    assert!(!matches("hello-2 …", "hello-1  d1"));
    assert!(!matches("NAME", "HOST NAME"), "a pattern without a leading … matches from the start");
    assert!(matches("NAME …", "NAME VERSION"));
    let parsed = steps("x\n```sh walk\nrack-manager ps\n```\n\n```text output\nID …\n```\n```sh\nnot walked\n```\n");
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].commands, ["rack-manager ps"]);
    assert_eq!(parsed[0].expected, ["ID …"]);
}

#[test]
fn readme_walks() {
    walk("README.md");
}

#[test]
fn operating_md_walks() {
    walk("docs/operating.md");
}
