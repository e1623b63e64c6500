//! A crate README's layout table (`| path | owns |`) must match the crate: every path it lists
//! exists, once, and every top-level module or directory in `src/` is listed (`main.rs` and
//! `lib.rs` included, when the table lists `src/` files at all). A module added without a row, or a row
//! left behind by a move, fails here rather than misleading the next reader.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// The workspace root: xtask lives one level below it.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace root").to_path_buf()
}

/// The first-column paths of every `| path | owns |` table in `readme`.
fn layout_paths(readme: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut in_table = false;
    for line in readme.lines() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        if !line.trim_start().starts_with('|') {
            in_table = false;
            continue;
        }
        if cells.len() >= 2 && cells[0] == "path" && cells[1] == "owns" {
            in_table = true;
            continue;
        }
        if !in_table || cells[0].chars().all(|c| c == '-' || c == ':') {
            continue;
        }
        // The path is the first cell's code span; a cell without one is prose, not a path.
        if let Some(path) = cells[0].split('`').nth(1) {
            paths.push(path.to_owned());
        }
    }
    paths
}

/// What is wrong with `crate_dir`'s layout table, one line per problem; empty when it matches.
fn layout_problems(crate_dir: &Path) -> Vec<String> {
    let Ok(readme) = fs::read_to_string(crate_dir.join("README.md")) else { return Vec::new() };
    let listed = layout_paths(&readme);
    if listed.is_empty() {
        return Vec::new();
    }
    let mut problems = Vec::new();
    for (i, path) in listed.iter().enumerate() {
        if listed[..i].contains(path) {
            problems.push(format!("README lists `{path}` twice"));
        }
        if !crate_dir.join(path).exists() {
            problems.push(format!("README lists `{path}`, which does not exist"));
        }
    }
    let names: Vec<&str> = listed.iter().map(|p| p.trim_end_matches('/')).collect();
    if names.iter().any(|n| n.starts_with("src/")) {
        let mut entries: Vec<String> = fs::read_dir(crate_dir.join("src"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        entries.sort();
        for entry in entries {
            let path = format!("src/{entry}");
            if !names.contains(&path.as_str()) {
                problems.push(format!("`{path}` is missing from the README's layout table"));
            }
        }
    }
    problems
}

/// Every crate directory of the workspace (a directory with a Cargo.toml), outside `target/`.
fn crate_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.join("Cargo.toml").is_file() {
        out.push(dir.to_owned());
    }
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let skip = matches!(name.to_str(), Some("target" | ".git" | ".mast" | "node_modules"));
        if !skip && entry.file_type().is_ok_and(|t| t.is_dir()) {
            crate_dirs(&entry.path(), out);
        }
    }
}

#[test]
fn every_readme_layout_table_matches_its_crate() {
    let root = workspace_root();
    let mut dirs = Vec::new();
    crate_dirs(&root, &mut dirs);
    let mut problems = Vec::new();
    let mut checked = 0;
    for dir in &dirs {
        let found = layout_problems(dir);
        if fs::read_to_string(dir.join("README.md")).is_ok_and(|r| !layout_paths(&r).is_empty()) {
            checked += 1;
        }
        let name = dir.strip_prefix(&root).unwrap_or(dir).display().to_string();
        problems.extend(found.into_iter().map(|p| format!("{name}/README.md: {p}")));
    }
    assert!(checked >= 1, "no README with a `| path | owns |` table was found under {}", root.display());
    assert!(problems.is_empty(), "README layout tables disagree with the code:\n{}", problems.join("\n"));
}

#[test]
fn missing_stale_and_repeated_rows_are_all_reported() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    fs::create_dir_all(dir.path().join("src/peer")).expect("src/peer");
    fs::write(dir.path().join("src/main.rs"), "").expect("main.rs");
    fs::write(dir.path().join("src/client.rs"), "").expect("client.rs");
    let readme = "# x\n\n| path | owns |\n|---|---|\n| `src/main.rs` | the binary |\n| `src/peer/` | peers |\n\
                  | `src/gone.rs` | moved away |\n| `src/peer/` | peers again |\n\nAfter the table: `src/elsewhere.rs` is prose.\n";
    fs::write(dir.path().join("README.md"), readme).expect("README");
    let problems = layout_problems(dir.path());
    assert_eq!(
        problems,
        [
            "README lists `src/gone.rs`, which does not exist".to_owned(),
            "README lists `src/peer/` twice".to_owned(),
            "`src/client.rs` is missing from the README's layout table".to_owned(),
        ]
    );
}
