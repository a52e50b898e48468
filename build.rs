//! Embeds `sql/*.sql` (in file-name order) so the binary applies its own
//! functions and triggers wherever it runs, and rebuilds when they change.

use std::fs;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=sql");
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=web");
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let mut code = String::from("/// `sql/*.sql` as (file name, text), in file-name order.\npub const SQL_FILES: &[(&str, &str)] = &[\n");
    for (name, path) in files(&Path::new(&root).join("sql"), "sql") {
        code.push_str(&format!("    ({name:?}, include_str!({path:?})),\n"));
    }
    code.push_str("];\n");
    fs::write(Path::new(&out).join("sql_files.rs"), code).expect("write sql_files.rs");

    let mut web = String::from(
        "/// `web/**` as (path under web/, bytes).\npub const WEB_FILES: &[(&str, &[u8])] = &[\n",
    );
    let mut stack = vec![Path::new(&root).join("web")];
    let mut entries = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                println!("cargo:rerun-if-changed={}", p.display());
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(Path::new(&root).join("web"))
                    .expect("under web/")
                    .to_string_lossy()
                    .replace('\\', "/");
                entries.push((rel, p.display().to_string()));
            }
        }
    }
    entries.sort();
    for (rel, path) in entries {
        web.push_str(&format!("    ({rel:?}, include_bytes!({path:?})),\n"));
    }
    web.push_str("];\n");
    fs::write(Path::new(&out).join("web_files.rs"), web).expect("write web_files.rs");
}

fn files(dir: &Path, ext: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| {
            (
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                p.display().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}
