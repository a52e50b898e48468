//! The README's example session (issue 13.4), replayed against a real
//! server on freshly seeded demo data, so the first thing a new user tries
//! stays true.
//!
//! The block under "A session with a WebSocket client" is read line by line:
//! `> {…}` is sent, `< {…}` must be the next frame. A README line is JSON
//! with `…` for what it leaves out: `"key":…` accepts any value, a `…` among
//! an object's members or an array's elements accepts more of them; an
//! object or array without `…` must match exactly, member for member.
//! Values that differ per run are compared by shape: ids (`id`, `*_id`,
//! `*_ids`) by binding — the README's `"7"` for a screening stands for
//! whatever id the server answered there, and must stand for the same one
//! everywhere after, including in the requests — and `ts`, `server` and
//! `*_at` by JSON type. Everything else (names, counts, versions, codes,
//! messages) must be equal.
//!
//! A `hall_update` the README shows is somebody else's change: before
//! reading it, the test makes it happen as another logged-in user holding
//! the seats the line shows.

use std::collections::HashMap;

use crate::harness::*;
use serde_json::{json, Map, Value};

const ANY: &str = "\u{0}ANY";
const MORE: &str = "\u{0}MORE";

/// The lines of the example session's `text` block.
fn readme_session() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let start = readme
        .find("## A session with a WebSocket client")
        .expect("README.md has the section \"A session with a WebSocket client\"");
    let rest = &readme[start..];
    let open = rest
        .find("```text\n")
        .expect("a ```text block in the section")
        + 8;
    let close = rest[open..].find("```").expect("the block ends") + open;
    rest[open..close].lines().map(str::to_owned).collect()
}

/// A README line as JSON: `…` becomes the markers [`ANY`] and [`MORE`].
fn pattern(line: &str) -> Value {
    let mut out = String::new();
    let mut stack = Vec::new();
    let (mut in_str, mut escaped) = (false, false);
    let mut last = ' ';
    for c in line.chars() {
        if in_str {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            last = c;
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' | '[' => stack.push(c),
            '}' | ']' => {
                stack.pop();
            }
            _ => {}
        }
        if c == '…' {
            if last == ':' {
                out.push_str("\"\\u0000ANY\"");
            } else if stack.last() == Some(&'{') {
                out.push_str("\"\\u0000MORE\":true");
            } else {
                out.push_str("\"\\u0000MORE\"");
            }
        } else {
            out.push(c);
        }
        if !c.is_whitespace() {
            last = c;
        }
    }
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("README line is not JSON with …: {e}\n{line}"))
}

/// The kind of id a key holds (`screening_id` and a screening's `id` are
/// both "screening"), or `None` for keys that are not ids.
fn id_kind(key: &str, parent: &str) -> Option<String> {
    if key == "id" {
        return Some(parent.trim_end_matches('s').to_owned());
    }
    key.strip_suffix("_ids")
        .or_else(|| key.strip_suffix("_id"))
        .map(str::to_owned)
}

/// README ids bound to the server's: (kind, README id) → server id.
type Bindings = HashMap<(String, String), String>;

fn bind(b: &mut Bindings, kind: &str, readme: &Value, got: &Value, at: &str) -> Result<(), String> {
    let (Some(r), Some(g)) = (readme.as_str(), got.as_str()) else {
        return Err(format!(
            "{at}: an id is a string: README {readme}, server {got}"
        ));
    };
    match b.get(&(kind.to_owned(), r.to_owned())) {
        Some(known) if known != g => Err(format!(
            "{at}: the README's {kind} id {r:?} was the server's {known:?} before, now {g:?}"
        )),
        Some(_) => Ok(()),
        None => {
            b.insert((kind.to_owned(), r.to_owned()), g.to_owned());
            Ok(())
        }
    }
}

fn same_type(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

fn matches(
    p: &Value,
    got: &Value,
    key: &str,
    parent: &str,
    b: &mut Bindings,
    at: &str,
) -> Result<(), String> {
    if p.as_str() == Some(ANY) {
        return Ok(());
    }
    if let Some(kind) = id_kind(key, parent) {
        if let (Some(ps), Some(gs)) = (p.as_array(), got.as_array()) {
            if ps.len() != gs.len() {
                return Err(format!("{at}: README {p}, server {got}"));
            }
            for (i, (pv, gv)) in ps.iter().zip(gs).enumerate() {
                bind(b, &kind, pv, gv, &format!("{at}[{i}]"))?;
            }
            return Ok(());
        }
        return bind(b, &kind, p, got, at);
    }
    if key == "ts" || key == "server" || key.ends_with("_at") {
        return if same_type(p, got) {
            Ok(())
        } else {
            Err(format!("{at}: README {p} and server {got} differ in type"))
        };
    }
    match (p, got) {
        (Value::Object(po), Value::Object(go)) => {
            let open = po.contains_key(MORE);
            for (k, pv) in po.iter().filter(|(k, _)| k.as_str() != MORE) {
                let gv = go
                    .get(k)
                    .ok_or_else(|| format!("{at}: the server's object has no `{k}`: {got}"))?;
                matches(pv, gv, k, key, b, &format!("{at}.{k}"))?;
            }
            if !open {
                if let Some(extra) = go.keys().find(|k| !po.contains_key(*k)) {
                    return Err(format!(
                        "{at}: the server also sends `{extra}`, which the README line neither shows nor elides (…): {got}"
                    ));
                }
            }
            Ok(())
        }
        (Value::Array(pa), Value::Array(ga)) => {
            let open = pa.iter().any(|v| v.as_str() == Some(MORE));
            let shown: Vec<&Value> = pa.iter().filter(|v| v.as_str() != Some(MORE)).collect();
            if !open {
                if ga.len() != shown.len() {
                    return Err(format!(
                        "{at}: README shows {} element(s), the server sent {}",
                        shown.len(),
                        ga.len()
                    ));
                }
                for (i, (pv, gv)) in shown.iter().zip(ga).enumerate() {
                    matches(pv, gv, key, parent, b, &format!("{at}[{i}]"))?;
                }
                return Ok(());
            }
            // With `…`: the shown elements appear in this order, others between.
            let mut from = 0;
            for (i, pv) in shown.iter().enumerate() {
                let found = (from..ga.len()).find_map(|j| {
                    let mut trial = b.clone();
                    matches(pv, &ga[j], key, parent, &mut trial, at)
                        .ok()
                        .map(|()| (j, trial))
                });
                let Some((j, trial)) = found else {
                    return Err(format!(
                        "{at}: README element {i} ({pv}) is not among the server's elements {from}.. of {got}"
                    ));
                };
                *b = trial;
                from = j + 1;
            }
            Ok(())
        }
        _ if p == got => Ok(()),
        _ => Err(format!("{at}: README {p}, server {got}")),
    }
}

/// A README request with its ids replaced by the server's.
fn substitute(v: &Value, key: &str, parent: &str, b: &Bindings) -> Value {
    if let Some(kind) = id_kind(key, parent) {
        let one = |x: &Value| -> Value {
            let r = x
                .as_str()
                .unwrap_or_else(|| panic!("a README id is a string: {x}"));
            let g = b.get(&(kind.clone(), r.to_owned())).unwrap_or_else(|| {
                panic!("the README sends the {kind} id {r:?} before any answer showed it")
            });
            json!(g)
        };
        return match v {
            Value::Array(a) => Value::Array(a.iter().map(one).collect()),
            _ => one(v),
        };
    }
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), substitute(x, k, key, b)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(x, key, parent, b)).collect()),
        _ => v.clone(),
    }
}

#[tokio::test]
async fn the_readme_session_is_what_the_server_says_on_demo_data() {
    let db = TestDb::new().await;
    db.psql()
        .await
        .batch_execute("SELECT admin.seed_demo()")
        .await
        .expect("seed the demo data");
    let server = start(&db, config(&db), marquee::app::Tuning::default()).await;

    let lines = readme_session();
    assert!(
        lines.iter().filter(|l| l.starts_with("> ")).count() >= 4,
        "the README session sends requests:\n{}",
        lines.join("\n")
    );
    let mut client = Client::connect(&server).await;
    let mut session = Some(client.session.clone());
    let mut other: Option<Client> = None;
    let mut b = Bindings::new();
    for (n, line) in lines.iter().enumerate() {
        let at = format!("README session line {}", n + 1);
        if let Some(req) = line.strip_prefix("> ") {
            let frame = substitute(&pattern(req), "", "", &b);
            client.send_text(frame.to_string()).await;
        } else if let Some(expected) = line.strip_prefix("< ") {
            let p = pattern(expected);
            if p["type"] == "hall_update" {
                // Somebody else's change: another user holds the seats shown.
                let screening = substitute(&p["data"]["screening_id"], "screening_id", "", &b);
                let seats: Vec<Value> = p["data"]["seats"]
                    .as_array()
                    .expect("a hall_update line shows its seats")
                    .iter()
                    .map(|s| substitute(&s["id"], "id", "seats", &b))
                    .collect();
                let (mut someone, _, _) = logged_in(&server, "someone_else").await;
                someone
                    .ok(
                        "hold_seats",
                        json!({"screening_id": screening, "seat_ids": seats}),
                    )
                    .await;
                other = Some(someone);
            }
            let got = match session.take() {
                Some(s) => s,
                None => client
                    .next_frame()
                    .await
                    .unwrap_or_else(|| panic!("{at}: the connection closed")),
            };
            if let Err(e) = matches(&p, &got, "", "", &mut b, "frame") {
                panic!(
                    "{at} does not match the server:\n  {e}\n  README: {expected}\n  server: {got}"
                );
            }
        }
    }
    assert!(
        session.is_none(),
        "the README session starts with the session frame"
    );
    drop(other);
}

#[test]
fn the_matcher_refuses_what_the_readme_does_not_say() {
    let mut b = Bindings::new();
    let p = pattern(r#"{"a":1,"ts":1,"w":…,"list":[{"id":"7","n":2},…,{"n":4}],"o":{"x":1,…}}"#);
    let ok =
        json!({"a":1,"ts":5,"w":[1],"list":[{"id":"70","n":2},{"n":3},{"n":4}],"o":{"x":1,"y":2}});
    assert_eq!(matches(&p, &ok, "", "", &mut b, "f"), Ok(()));
    assert_eq!(
        b.get(&("list".into(), "7".into())).map(String::as_str),
        Some("70")
    );
    for bad in [
        json!({"a":2,"ts":5,"w":[1],"list":[{"id":"70","n":2},{"n":4}],"o":{"x":1}}),
        json!({"a":1,"ts":5,"w":[1],"list":[{"id":"70","n":2},{"n":4}],"o":{"x":1},"extra":0}),
        json!({"a":1,"ts":5,"w":[1],"list":[{"id":"70","n":2,"m":1},{"n":4}],"o":{"x":1}}),
        json!({"a":1,"ts":5,"w":[1],"list":[{"n":4},{"id":"70","n":2}],"o":{"x":1}}),
        json!({"a":1,"ts":5,"w":[1],"list":[{"id":"70","n":2}],"o":{"x":1}}),
        json!({"a":1,"ts":"5","w":[1],"list":[{"id":"70","n":2},{"n":4}],"o":{"x":1}}),
        json!({"a":1,"ts":5,"w":[1],"list":[{"id":"99","n":2},{"n":4}],"o":{"x":1}}),
    ] {
        assert!(
            matches(&p, &bad, "", "", &mut b, "f").is_err(),
            "should not match: {bad}"
        );
    }
}
