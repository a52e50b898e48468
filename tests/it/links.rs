//! A clone stands on its own (issue 13.1): every relative link in the
//! repository's Markdown files and in the doc comments (`//!`, `///`) of
//! `src/`, `tests/` and `bench/` must name a file or directory inside the
//! repository that exists, and a `#fragment` must name a heading of the
//! Markdown file it points at (anchors computed the way GitHub does). A link
//! that leaves the repository (`../shared/…`, `/work/…`) fails: a clone has
//! nothing there. Links with a scheme (`https:`) and rustdoc's intra-doc
//! links are not checked.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Directories never searched: build output, VCS data, local state.
fn skipped(name: &str) -> bool {
    name.starts_with('.') || name == "target" || name == "node_modules"
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !skipped(&name) {
                files(&path, out);
            }
        } else {
            out.push(path);
        }
    }
}

/// Markdown text with fenced code blocks blanked out (line numbers kept).
fn without_code_blocks(text: &str) -> Vec<String> {
    let mut fence: Option<&str> = None;
    text.lines()
        .map(|line| {
            let t = line.trim_start();
            let marker = ["```", "~~~"].into_iter().find(|m| t.starts_with(m));
            match (fence, marker) {
                (None, Some(m)) => {
                    fence = Some(m);
                    String::new()
                }
                (Some(f), Some(m)) if f == m => {
                    fence = None;
                    String::new()
                }
                (Some(_), _) => String::new(),
                (None, None) => line.to_owned(),
            }
        })
        .collect()
}

/// A line with its inline code spans removed.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut parts = line.split('`');
    let mut inside = false;
    for p in parts.by_ref() {
        if !inside {
            out.push_str(p);
        }
        inside = !inside;
    }
    out
}

/// The link targets of one (code-free) Markdown line: inline links and
/// images `[text](target "title")` and reference definitions `[id]: target`.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut out = Vec::new();
    let t = line.trim_start();
    if t.starts_with('[') {
        if let Some(close) = t.find("]:") {
            if !t[..close].contains('[') || close > 0 {
                let target = t[close + 2..].split_whitespace().next().unwrap_or("");
                if !target.is_empty() && !t[1..close].contains(']') {
                    out.push(target.trim_matches(['<', '>']).to_owned());
                }
            }
        }
    }
    let mut rest = line.as_str();
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let end = after.find(')').unwrap_or(after.len());
        let inner = after[..end].trim();
        let target = if let Some(stripped) = inner.strip_prefix('<') {
            stripped.split('>').next().unwrap_or("")
        } else {
            inner.split_whitespace().next().unwrap_or("")
        };
        if !target.is_empty() {
            out.push(target.to_owned());
        }
        rest = &after[end.min(after.len())..];
    }
    out
}

/// GitHub's anchor for a heading's text: markup dropped, lower case, only
/// letters, digits, `-`, `_` and spaces kept, spaces become `-`.
fn anchor(heading: &str) -> String {
    // Link text only: `[text](url)` → `text`.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(i) = rest.find("](") {
        let (before, after) = rest.split_at(i);
        text.push_str(before);
        rest = after[2..].split_once(')').map(|(_, r)| r).unwrap_or("");
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor of a Markdown file, duplicates numbered like GitHub does.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for line in without_code_blocks(text) {
        let t = line.trim_start();
        let hashes = t.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&hashes) || !t[hashes..].starts_with(' ') {
            continue;
        }
        let base = anchor(t[hashes..].trim().trim_end_matches('#'));
        let mut a = base.clone();
        let mut n = 0;
        while seen.contains(&a) {
            n += 1;
            a = format!("{base}-{n}");
        }
        seen.insert(a);
    }
    seen
}

/// `path` relative to `dir` with `.` and `..` resolved; `None` when it
/// climbs above the repository root.
fn resolve(root: &Path, dir: &Path, target: &str) -> Option<PathBuf> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<Component<'_>> = Vec::new();
    let rel = dir.strip_prefix(root).ok()?;
    let joined = rel.join(target);
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(_) => parts.push(c),
            _ => return None,
        }
    }
    Some(root.join(parts.iter().collect::<PathBuf>()))
}

/// The problem with one link of `file`, if any.
fn check(root: &Path, file: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") || target.contains("::") {
        return None;
    }
    // Rustdoc intra-doc links look like `[x](Self::y)` or `[x](crate::y)`
    // (caught above) or a bare path without a file extension.
    let (path, fragment) = match target.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (target, None),
    };
    let dir = file.parent().unwrap_or(root);
    let resolved = if path.is_empty() {
        file.to_path_buf()
    } else {
        match resolve(root, dir, path) {
            Some(p) => p,
            None => return Some(format!("{target} leaves the repository")),
        }
    };
    if !resolved.exists() {
        return Some(format!("{target}: {} does not exist", resolved.display()));
    }
    if let Some(f) = fragment {
        if resolved.extension().is_some_and(|e| e == "md") {
            let text = std::fs::read_to_string(&resolved).unwrap_or_default();
            if !anchors(&text).contains(f) {
                return Some(format!(
                    "{target}: {} has no heading with the anchor #{f}",
                    resolved.display()
                ));
            }
        }
    }
    None
}

/// The doc comment lines of a Rust file as Markdown (other lines blank).
fn doc_comments(text: &str) -> String {
    text.lines()
        .map(|l| {
            let t = l.trim_start();
            t.strip_prefix("//!")
                .or_else(|| t.strip_prefix("///"))
                .unwrap_or("")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn problems_in(root: &Path, file: &Path, markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (n, line) in without_code_blocks(markdown).iter().enumerate() {
        for target in link_targets(line) {
            if let Some(p) = check(root, file, &target) {
                let shown = file.strip_prefix(root).unwrap_or(file);
                out.push(format!("{}:{}: {p}", shown.display(), n + 1));
            }
        }
    }
    out
}

#[test]
fn every_relative_link_names_a_file_and_anchor_in_the_repository() {
    let root = root();
    let mut all = Vec::new();
    files(&root, &mut all);
    let mut problems = Vec::new();
    let (mut md, mut rs, mut links) = (0, 0, 0);
    for file in &all {
        let rel = file.strip_prefix(&root).unwrap_or(file);
        let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
        let in_code_dirs = ["src", "tests", "bench"].iter().any(|d| rel.starts_with(d));
        let text = match ext {
            "md" => {
                md += 1;
                std::fs::read_to_string(file).expect("read Markdown")
            }
            "rs" if in_code_dirs => {
                rs += 1;
                doc_comments(&std::fs::read_to_string(file).expect("read Rust"))
            }
            _ => continue,
        };
        links += without_code_blocks(&text)
            .iter()
            .map(|l| link_targets(l).len())
            .sum::<usize>();
        problems.extend(problems_in(&root, file, &text));
    }
    assert!(links >= 40, "only {links} links found: is the scan broken?");
    assert!(
        md >= 8 && rs >= 30,
        "found only {md} Markdown and {rs} Rust files"
    );
    assert!(
        problems.is_empty(),
        "{} broken link(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_checker_catches_what_it_should() {
    let root = root();
    let readme = root.join("README.md");
    let doc = root.join("docs/protocol.md");
    let bad = |file: &Path, md: &str| problems_in(&root, file, md);
    assert_eq!(
        bad(&readme, "[c](docs/protocol.md#auth)"),
        Vec::<String>::new()
    );
    assert_eq!(
        bad(
            &doc,
            "[a](#box-office-version-11) [b](../README.md#prerequisites)"
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        bad(&doc, "[x](https://example.com/../..) `[y](../../nowhere)`"),
        Vec::<String>::new()
    );
    assert_eq!(
        bad(&doc, "```\n[y](../../nowhere)\n```"),
        Vec::<String>::new()
    );
    assert_eq!(
        bad(&doc, "[t](crate::shared::protocol)"),
        Vec::<String>::new()
    );
    for md in [
        "[c](../shared/PROTOCOL.md)",
        "[c](../../shared/PROTOCOL.md)",
        "[c](/work/shared/PROTOCOL.md)",
        "[c](nothing-here.md)",
        "[c](#no-such-heading)",
        "[c](auth.md#no-such-heading)",
        "[c]: ../../outside.md",
        "![img](missing.png \"title\")",
    ] {
        assert_eq!(bad(&doc, md).len(), 1, "should be refused: {md}");
    }
    assert_eq!(anchor("Box office (version 1.1)"), "box-office-version-11");
    assert_eq!(anchor("`hold_seats`"), "hold_seats");
    assert_eq!(anchor("Ids, times and money"), "ids-times-and-money");
    assert_eq!(anchor("See [the docs](x.md) now"), "see-the-docs-now");
    let dup = anchors("# A\n## A\n```\n# B\n```\n");
    assert!(dup.contains("a") && dup.contains("a-1") && !dup.contains("b"));
}
