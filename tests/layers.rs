//! A binary of its own: it reads only `src/`, needs no database, and is the layer
//! check other tools run alone (`cargo test --test layers`).
//!
//! The layering rule of `src/lib.rs`, checked by scanning the source (a
//! tidy test in the manner of rust-analyzer's): a module imports only from
//! layers below its own, and `methods` and `subscriptions` never import each
//! other.
//!
//! ```text
//! controllers 5 > methods = subscriptions 4 > models 3 > core 2 > shared 1
//! ```
//!
//! Files directly in `src/` (`lib.rs`, `app.rs`, `cli.rs`, `main.rs`) wire
//! the layers together and are exempt; they rank above every layer, so a
//! layer that imports them goes up too. Paths are found as `crate::x`,
//! `$crate::x`, `crate::{x, y}` and `super::…` chains that climb to the crate
//! root; `//` comments are ignored. Every violation is reported as
//! `src/<file>:<line>`.

use std::path::Path;

/// The layers and their ranks, lowest first.
const LAYERS: &[(&str, u8)] = &[
    ("shared", 1),
    ("core", 2),
    ("models", 3),
    ("methods", 4),
    ("subscriptions", 4),
    ("controllers", 5),
];

/// Top-level modules above every layer: the wiring.
const WIRING: &[&str] = &["app", "cli"];

fn rank(module: &str) -> Option<u8> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, r)| *r)
        .or_else(|| WIRING.contains(&module).then_some(6))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    /// Relative to `src/`.
    file: String,
    line: usize,
    message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "src/{}:{}: {}", self.file, self.line, self.message)
    }
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The source with `//` comments blanked (line structure kept).
fn strip_comments(src: &str) -> String {
    src.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &[u8], mut i: usize) -> (usize, usize) {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    let start = i;
    while i < s.len() && is_ident(s[i]) {
        i += 1;
    }
    (start, i)
}

/// The top-level module names a path names right after `i` (`x` of
/// `x::…`, or each first segment of a `{x::…, y}` group), with offsets.
fn named_modules(s: &[u8], i: usize) -> Vec<(usize, String)> {
    let mut j = i;
    while j < s.len() && s[j].is_ascii_whitespace() {
        j += 1;
    }
    if j < s.len() && s[j] == b'{' {
        // Top-level items of the group.
        let mut out = Vec::new();
        let mut depth = 0usize;
        let mut at_item = true;
        let mut k = j + 1;
        while k < s.len() {
            match s[k] {
                b'{' => depth += 1,
                b'}' if depth == 0 => break,
                b'}' => depth -= 1,
                b',' if depth == 0 => at_item = true,
                c if at_item && is_ident(c) => {
                    let (a, b) = ident_at(s, k);
                    out.push((a, String::from_utf8_lossy(&s[a..b]).into_owned()));
                    at_item = false;
                    k = b;
                    continue;
                }
                _ => {}
            }
            k += 1;
        }
        out
    } else {
        let (a, b) = ident_at(s, j);
        if a == b {
            Vec::new()
        } else {
            vec![(a, String::from_utf8_lossy(&s[a..b]).into_owned())]
        }
    }
}

/// Checks one file, given its path relative to `src/` and its text.
fn check_source(rel: &str, src: &str) -> Vec<Violation> {
    scan(rel, src).0
}

/// The violations of one file, and how many layer references it makes.
fn scan(rel: &str, src: &str) -> (Vec<Violation>, usize) {
    let parts: Vec<&str> = rel.split('/').collect();
    if parts.len() < 2 {
        return (Vec::new(), 0); // the wiring in src/ itself
    }
    let layer = parts[0];
    let line_of = |text: &str, off: usize| text[..off].matches('\n').count() + 1;
    let Some(own) = LAYERS.iter().find(|(n, _)| *n == layer).map(|(_, r)| *r) else {
        let v = Violation {
            file: rel.to_owned(),
            line: 1,
            message: format!("`src/{layer}/` is not a known layer: rank it in tests/layers.rs"),
        };
        return (vec![v], 0);
    };
    // How many `super::` climb from this file to the crate root.
    let depth = if parts.last() == Some(&"mod.rs") {
        parts.len() - 1
    } else {
        parts.len()
    };
    let text = strip_comments(src);
    let s = text.as_bytes();
    let mut targets: Vec<(usize, String)> = Vec::new();
    // `crate::` and `$crate::`.
    let mut from = 0;
    while let Some(p) = text[from..].find("crate::") {
        let at = from + p;
        from = at + "crate::".len();
        if at > 0 && is_ident(s[at - 1]) {
            continue; // e.g. `mycrate::`
        }
        targets.extend(named_modules(s, from));
    }
    // `super::super::…` reaching the crate root.
    let mut from = 0;
    while let Some(p) = text[from..].find("super::") {
        let at = from + p;
        if at > 0 && (is_ident(s[at - 1]) || s[at - 1] == b':') {
            from = at + 1;
            continue; // inside a longer chain, counted from its start
        }
        let mut k = at;
        let mut climbs = 0;
        while text[k..].starts_with("super::") {
            climbs += 1;
            k += "super::".len();
        }
        from = k;
        if climbs >= depth {
            targets.extend(named_modules(s, k));
        }
    }
    let mut out = Vec::new();
    let mut references = 0;
    for (off, name) in targets {
        let Some(theirs) = rank(&name) else {
            continue; // not a top-level module (a function, a type…)
        };
        references += 1;
        let message = if name == layer {
            continue;
        } else if theirs > own {
            format!("`{layer}` imports `{name}`, a higher layer")
        } else if theirs == own {
            format!(
                "`{layer}` imports `{name}`: methods and subscriptions meet only in controllers"
            )
        } else {
            continue;
        };
        out.push(Violation {
            file: rel.to_owned(),
            line: line_of(&text, off),
            message,
        });
    }
    (out, references)
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_imports_up_or_sideways() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut checked = 0;
    let mut references = 0;
    let mut violations = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(f).expect("read");
        if rel.contains('/') {
            checked += 1;
        }
        let (v, n) = scan(&rel, &text);
        violations.extend(v);
        references += n;
    }
    assert!(checked >= 6, "the layer directories were scanned");
    assert!(
        references >= 30,
        "cross-module paths were found: {references}"
    );
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_checker_catches_violations() {
    let lines = |rel: &str, src: &str| -> Vec<usize> {
        check_source(rel, src).iter().map(|v| v.line).collect()
    };
    // Up a layer, at the right line.
    assert_eq!(lines("models/seats.rs", "use crate::methods::x;"), [1]);
    assert_eq!(
        lines(
            "shared/ids.rs",
            "\n\nfn f() { crate::core::db::describe(e) }"
        ),
        [3]
    );
    assert_eq!(lines("core/hub.rs", "use crate::app::Server;"), [1]);
    assert_eq!(
        lines("methods/seats.rs", "pub use crate::controllers::State;"),
        [1]
    );
    // Sideways between methods and subscriptions, both ways.
    assert_eq!(
        lines("methods/auth.rs", "use crate::subscriptions::HallRouter;"),
        [1]
    );
    assert_eq!(
        lines(
            "subscriptions/router.rs",
            "use crate::methods::params::Params;"
        ),
        [1]
    );
    // Groups, across lines.
    assert_eq!(
        lines(
            "core/db.rs",
            "use crate::{\n    shared::config::Config,\n    controllers::State,\n};"
        ),
        [3]
    );
    // super chains that climb to the crate root.
    assert_eq!(
        lines("methods/auth.rs", "use super::super::controllers::State;"),
        [1]
    );
    assert_eq!(lines("methods/mod.rs", "use super::subscriptions::X;"), [1]);
    // Macros name the crate as `$crate`.
    assert_eq!(
        lines(
            "models/x.rs",
            "macro_rules! m { () => { $crate::controllers::x } }"
        ),
        [1]
    );
    // A directory that is no known layer.
    assert_eq!(lines("gadgets/x.rs", ""), [1]);

    // Allowed: downwards, within the layer, comments, other crates, the wiring.
    for (rel, src) in [
        (
            "controllers/ws.rs",
            "use crate::methods::auth;\nuse crate::subscriptions::X;\nuse crate::shared::y;",
        ),
        (
            "methods/auth.rs",
            "use super::params::Params;\nuse super::MethodError;",
        ),
        ("methods/auth.rs", "use crate::methods::params;"),
        (
            "core/db.rs",
            "// use crate::controllers::State;\n/// crate::app::Server\nlet x = 1; // crate::cli",
        ),
        (
            "models/x.rs",
            "use mycrate::controllers; use crate::models::y;",
        ),
        (
            "models/x.rs",
            "use crate::{shared::ids::SeatId, core::db::Db};",
        ),
        ("lib.rs", "use crate::controllers::x;"),
        ("app.rs", "use crate::controllers::x; use crate::cli;"),
        ("shared/x.rs", "pub(crate) fn f() {}"),
    ] {
        assert_eq!(check_source(rel, src), [], "{rel}: {src}");
    }
    // The report names file and line.
    let v = &check_source("models/seats.rs", "\nuse crate::controllers::x;")[0];
    assert!(v.to_string().starts_with("src/models/seats.rs:2: "), "{v}");
}
