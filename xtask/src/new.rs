//! `cargo xtask new NAME [--template http|tcp|udp]`: a new appliance that builds, boots and passes
//! its boot test at once, on both architectures and on the tender.
//!
//! It writes three things, from the templates in `xtask/templates/`:
//! - `kernel-apps/NAME/` — the crate: a `net::serve` service (HTTP routes, a TCP line echo, or a
//!   UDP echo) with the boot-argument and error handling every appliance needs;
//! - `images/NAME.toml` — its manifest: both architectures, 16 MiB, one `[[listen]]` port;
//! - `qemu-tests/tests/NAME.rs` — its boot test: boots it on QEMU aarch64 and x86_64 and on the
//!   tender, and probes the port (`cargo test -p qemu-tests --test NAME`).
//!
//! Nothing is overwritten: a name already taken by a crate, a manifest or a test is refused.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use images::build::workspace_root;

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The appliance's name: lowercase letters, digits and '-', starting with a letter. It names
    /// the crate (kernel-apps/NAME), the manifest (images/NAME.toml) and the boot test.
    pub name: String,
    /// What it starts as: `http` (routes over HTTP/1.1 on port 8080), `tcp` (a line echo on port
    /// 7) or `udp` (a datagram echo on port 7).
    #[arg(long, value_enum, default_value_t = Template::Http)]
    pub template: Template,
    /// The workspace to write into (default: this one). For tests.
    #[arg(long, hide = true)]
    pub root: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Template {
    Http,
    Tcp,
    Udp,
}

impl Template {
    fn port(self) -> u16 {
        match self {
            Template::Http => 8080,
            Template::Tcp | Template::Udp => 7,
        }
    }

    fn description(self) -> &'static str {
        match self {
            Template::Http => "An HTTP/1.1 appliance: GET / greets, GET /healthz says ok",
            Template::Tcp => "A TCP appliance that echoes each line",
            Template::Udp => "A UDP appliance that echoes each datagram",
        }
    }

    fn main_rs(self) -> &'static str {
        match self {
            Template::Http => include_str!("../templates/http.rs.in"),
            Template::Tcp => include_str!("../templates/tcp.rs.in"),
            Template::Udp => include_str!("../templates/udp.rs.in"),
        }
    }

    fn probe(self) -> &'static str {
        match self {
            Template::Http => include_str!("../templates/probe-http.rs.in"),
            Template::Tcp => include_str!("../templates/probe-tcp.rs.in"),
            Template::Udp => include_str!("../templates/probe-udp.rs.in"),
        }
    }
}

/// Crate names in `kernel-apps/` that are libraries, or that cargo or the workspace reserve.
const RESERVED: [&str; 8] = ["runtime", "net", "http1", "std", "core", "alloc", "test", "common"];

pub fn main(args: NewArgs) -> Result<ExitCode> {
    let root = args.root.clone().unwrap_or_else(workspace_root);
    let files = generate(&root, &args.name, args.template)?;
    for file in &files {
        println!("created {}", file.strip_prefix(&root).unwrap_or(file).display());
    }
    // Formatting is cosmetic: a missing rustfmt leaves correct, merely unformatted files.
    let rust_files: Vec<&PathBuf> = files.iter().filter(|f| f.extension().is_some_and(|e| e == "rs")).collect();
    let mut rustfmt = Command::new("rustfmt");
    rustfmt.current_dir(&root).args(["--edition", "2024"]).args(&rust_files);
    if !rustfmt.status().is_ok_and(|status| status.success()) {
        eprintln!("note: rustfmt did not run; `cargo fmt --all` formats the new files");
    }
    let name = &args.name;
    let port = args.template.port();
    println!(
        "\nnext:\n  cargo test -p qemu-tests --test {name}        # boot it on aarch64, x86_64 and the tender, and probe port {port}\n  \
         cargo xtask run {name} --arch aarch64         # run it; the console says where it listens\n  \
         cargo xtask image build {name} --arch x86_64 --release   # its signed image\n\
         then edit kernel-apps/{name}/src/main.rs (docs/appliances.md)"
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the crate, manifest and boot test for `name` under `root`; returns the files written.
pub fn generate(root: &Path, name: &str, template: Template) -> Result<Vec<PathBuf>> {
    check_name(name)?;
    let crate_dir = root.join("kernel-apps").join(name);
    let manifest = root.join("images").join(format!("{name}.toml"));
    let test = root.join("qemu-tests/tests").join(format!("{name}.rs"));
    for taken in [&crate_dir, &manifest, &test] {
        if taken.exists() {
            bail!("{} already exists: pick another name (nothing was written)", taken.display());
        }
    }
    let ident = name.replace('-', "_");
    let port = template.port().to_string();
    let (proto, variant) = if template == Template::Udp { ("udp", "Udp") } else { ("tcp", "Tcp") };
    let fill = |text: &str| {
        text.replace("__NAME__", name)
            .replace("__IDENT__", &ident)
            .replace("__PORT__", &port)
            .replace("__PROTO__", proto)
            .replace("__PROTO_VARIANT__", variant)
            .replace("__DESCRIPTION__", template.description())
            .replace("__HTTP1__", if template == Template::Http { "http1.workspace = true\n" } else { "" })
    };
    let (imports, probe) = template.probe().split_once("---\n").context("a probe template has imports, ---, a body")?;
    let test_text =
        include_str!("../templates/test.rs.in").replace("__IMPORTS__", imports).replace("__PROBE__\n", probe);

    let files = [
        (crate_dir.join("src/main.rs"), fill(template.main_rs())),
        (manifest, fill(include_str!("../templates/manifest.toml.in"))),
        (test, fill(&test_text)),
        // Last: the crate joins the workspace (the `kernel-apps/*` glob) only once it is whole.
        (crate_dir.join("Cargo.toml"), fill(include_str!("../templates/Cargo.toml.in"))),
    ];
    let mut written = Vec::new();
    for (path, text) in files {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The manifest's rule for names (images::manifest), plus the crates that are not appliances.
fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!(
            "{name:?} is not a valid appliance name: use lowercase letters, digits and '-', starting with a letter \
             (at most 64)"
        );
    }
    if RESERVED.contains(&name) {
        bail!("{name:?} is taken by a library crate or reserved by cargo: pick another name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_anything_is_written() {
        for bad in ["", "Web", "1st", "a b", "web_app", "net", "../x", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["web", "edge-cache2", "a"] {
            assert!(check_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn every_template_fills_every_placeholder_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("a temp dir");
        for (name, template) in [("web-a", Template::Http), ("lines", Template::Tcp), ("dgram", Template::Udp)] {
            let files = generate(dir.path(), name, template).expect("generated");
            assert_eq!(files.len(), 4);
            for file in &files {
                let text = fs::read_to_string(file).expect("written");
                assert!(!text.contains("__"), "{} keeps a placeholder:\n{text}", file.display());
            }
            let manifest = fs::read_to_string(dir.path().join(format!("images/{name}.toml"))).expect("manifest");
            images::manifest::parse(&format!("images/{name}.toml"), &manifest).expect("a valid manifest");
            let error = generate(dir.path(), name, template).expect_err("a second time is refused");
            assert!(error.to_string().contains("already exists"), "{error}");
        }
    }
}
