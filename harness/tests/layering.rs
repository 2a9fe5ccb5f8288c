//! The layering, checked: data flows one way, spec → observe → judge → report → the
//! `capring` binary, and no module of a crate imports a module that imports it back.
//!
//! * Crates: the manifest of each layer names, among the layered crates, only lower ones
//!   (in every kind of dependency). Cargo refuses a cycle of normal dependencies, but
//!   takes a dev-dependency back up (observe's tests on judge) without a word; this does
//!   not.
//! * Modules: within each layered crate, the modules directly under one directory (the
//!   crate's top-level modules, `checks/*`, `minimize/*`, `observer/*`, the binary's
//!   `cmd/*`, …) have no import cycle. An edge is any `crate::…`, `super::…` or `self::…`
//!   path in code (`use` trees included, test modules included); comments and string
//!   literals are left out, since a doc link is no import.
//!
//! Needs no root: `cargo nextest run -p capring-harness --test layering`. The last tests run
//! the same checks on made-up sources, so it is shown that they can fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first: (package, directory).
const LAYERS: &[(&str, &str)] = &[
    ("capring-spec", "spec"),
    ("capring-observe", "observe"),
    ("capring-judge", "judge"),
    ("capring-report", "report"),
    ("capring-harness", "harness"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

// ---------------------------------------------------------------------------------------
// Crates

/// The layered crates `manifest` (of the layer at `rank`) depends on that are not below it.
fn upward_dependencies(manifest: &str, rank: usize) -> Vec<String> {
    let doc: toml::Table = manifest.parse().expect("a valid Cargo.toml");
    let mut tables: Vec<&toml::Table> = Vec::new();
    for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
        tables.extend(doc.get(kind).and_then(|t| t.as_table()));
    }
    // [target.'cfg(…)'.dependencies] and the like.
    if let Some(targets) = doc.get("target").and_then(|t| t.as_table()) {
        for t in targets.values().filter_map(|t| t.as_table()) {
            for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
                tables.extend(t.get(kind).and_then(|t| t.as_table()));
            }
        }
    }
    let mut up = Vec::new();
    for (name, spec) in tables.iter().flat_map(|t| t.iter()) {
        // `foo = { package = "capring-judge", … }` renames a dependency.
        let package = spec.get("package").and_then(|p| p.as_str()).unwrap_or(name);
        if let Some(r) = LAYERS.iter().position(|(p, _)| *p == package) {
            if r >= rank {
                up.push(format!("{package} (layer {r}, not below {rank})"));
            }
        }
    }
    up
}

#[test]
fn each_layer_depends_only_on_lower_layers() {
    let mut problems = Vec::new();
    for (rank, (package, dir)) in LAYERS.iter().enumerate() {
        let path = root().join(dir).join("Cargo.toml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert!(
            text.contains(&format!("name = \"{package}\"")),
            "{} is not {package}",
            path.display()
        );
        for up in upward_dependencies(&text, rank) {
            problems.push(format!("{package} depends on {up}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Modules

/// A path found in a file: the module it was written in, the path made absolute (from the
/// crate root), and the line.
struct Reference {
    from: Vec<String>,
    to: Vec<String>,
    line: usize,
}

/// `text` without comments and string or character literals (each replaced by spaces, so
/// lines keep their numbers).
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, s: &[char]| {
        out.extend(s.iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }))
    };
    let mut i = 0;
    while i < c.len() {
        let rest = &c[i..];
        let end = if rest.starts_with(&['/', '/']) {
            rest.iter().position(|&ch| ch == '\n').unwrap_or(rest.len())
        } else if rest.starts_with(&['/', '*']) {
            block_comment_len(rest)
        } else if rest[0] == '"' || (rest[0] == 'r' && raw_string_start(rest).is_some()) {
            string_len(rest)
        } else if rest[0] == '\'' {
            char_literal_len(rest)
        } else {
            0
        };
        if end > 0 {
            blank(&mut out, &rest[..end]);
            i += end;
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    out
}

fn block_comment_len(s: &[char]) -> usize {
    let (mut depth, mut i) = (0, 0);
    while i < s.len() {
        if s[i..].starts_with(&['/', '*']) {
            depth += 1;
            i += 2;
        } else if s[i..].starts_with(&['*', '/']) {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    s.len()
}

/// For `r"…"` or `r#"…"#`: the number of `#`.
fn raw_string_start(s: &[char]) -> Option<usize> {
    let hashes = s[1..].iter().take_while(|&&c| c == '#').count();
    (s.get(1 + hashes) == Some(&'"')).then_some(hashes)
}

fn string_len(s: &[char]) -> usize {
    if let Some(hashes) = (s[0] == 'r').then(|| raw_string_start(s)).flatten() {
        let close: Vec<char> = std::iter::once('"')
            .chain(std::iter::repeat_n('#', hashes))
            .collect();
        let start = 2 + hashes;
        return (start..s.len())
            .find(|&i| s[i..].starts_with(&close))
            .map_or(s.len(), |i| i + close.len());
    }
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

/// A character literal's length; 0 for a lifetime (`'a`), which stays.
fn char_literal_len(s: &[char]) -> usize {
    if s.get(1) == Some(&'\\') {
        return (2..s.len())
            .find(|&i| s[i] == '\'')
            .map_or(s.len(), |i| i + 1);
    }
    if s.get(2) == Some(&'\'') {
        return 3;
    }
    0
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn skip_ws(c: &[char], i: &mut usize) {
    while *i < c.len() && c[*i].is_whitespace() {
        *i += 1;
    }
}

fn ident(c: &[char], i: &mut usize) -> String {
    let start = *i;
    while *i < c.len() && is_ident(c[*i]) {
        *i += 1;
    }
    c[start..*i].iter().collect()
}

/// The paths of a use tree (or of a plain path in code) starting at `i`.
fn tree(c: &[char], i: &mut usize) -> Vec<Vec<String>> {
    skip_ws(c, i);
    if c.get(*i) == Some(&'{') {
        *i += 1;
        let mut out = Vec::new();
        loop {
            skip_ws(c, i);
            match c.get(*i) {
                None => return out,
                Some('}') => {
                    *i += 1;
                    return out;
                }
                Some(',') => *i += 1,
                Some(_) => {
                    let before = *i;
                    out.extend(tree(c, i));
                    if *i == before {
                        *i += 1;
                    }
                }
            }
        }
    }
    let id = ident(c, i);
    if id.is_empty() {
        return vec![Vec::new()];
    }
    let mut j = *i;
    skip_ws(c, &mut j);
    if c[j..].starts_with(&[':', ':']) {
        *i = j + 2;
        let rest = tree(c, i);
        return rest
            .into_iter()
            .map(|p| std::iter::once(id.clone()).chain(p).collect())
            .collect();
    }
    vec![vec![id]]
}

/// Every `crate::`, `super::` and `self::` path of a file whose module is `module`, made
/// absolute. Inline modules (`mod tests { … }`) are followed, so `super` means what it
/// means there.
fn references(text: &str, module: &[String]) -> Vec<Reference> {
    let c: Vec<char> = code_only(text).chars().collect();
    let mut out = Vec::new();
    let mut inline: Vec<(String, usize)> = Vec::new();
    let (mut depth, mut line, mut i) = (0usize, 1usize, 0usize);
    let mut pending_mod: Option<String> = None;
    while i < c.len() {
        let boundary = i == 0 || !(is_ident(c[i - 1]) || c[i - 1] == '$');
        match c[i] {
            '\n' => line += 1,
            '{' => {
                depth += 1;
                if let Some(name) = pending_mod.take() {
                    inline.push((name, depth));
                }
            }
            '}' => {
                while inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            ';' => pending_mod = None,
            ch if boundary && is_ident(ch) => {
                let mut j = i;
                let word = ident(&c, &mut j);
                if word == "mod" {
                    let mut k = j;
                    skip_ws(&c, &mut k);
                    let name = ident(&c, &mut k);
                    pending_mod = (!name.is_empty()).then_some(name);
                    i = k;
                    continue;
                }
                let mut k = j;
                skip_ws(&c, &mut k);
                if matches!(word.as_str(), "crate" | "super" | "self")
                    && c[k..].starts_with(&[':', ':'])
                {
                    let here: Vec<String> = module
                        .iter()
                        .cloned()
                        .chain(inline.iter().map(|(n, _)| n.clone()))
                        .collect();
                    let mut at = k + 2;
                    for path in tree(&c, &mut at) {
                        let full: Vec<String> = std::iter::once(word.clone()).chain(path).collect();
                        if let Some(to) = absolute(&full, &here) {
                            out.push(Reference {
                                from: here.clone(),
                                to,
                                line,
                            });
                        }
                    }
                    line += c[i..at].iter().filter(|&&ch| ch == '\n').count();
                    i = at;
                    continue;
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// `crate::a::b`, `super::super::a`, `self::a` as a path from the crate root.
fn absolute(path: &[String], here: &[String]) -> Option<Vec<String>> {
    let mut base: Vec<String> = here.to_vec();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        _ => {}
    }
    while rest.first().map(String::as_str) == Some("super") {
        base.pop()?;
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// A crate's source files: path relative to `src`, and text.
fn sources(src: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p.strip_prefix(src).unwrap().to_path_buf(), text));
            }
        }
    }
    out.sort();
    out
}

/// The module of a file: `checks/mod.rs` → checks, `plan/tests.rs` → plan::tests.
fn module_of(rel: &Path) -> Vec<String> {
    let mut m: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        m.pop();
    }
    m
}

/// Sibling modules (children of one module) and the edges between them, with where each
/// edge was first seen: parent → (from, to) → "file:line".
type Graphs = BTreeMap<Vec<String>, Edges>;

fn graphs(files: &[(PathBuf, String)]) -> Graphs {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(p, _)| module_of(p)).collect();
    let mut out = Graphs::new();
    for (rel, text) in files {
        for r in references(text, &module_of(rel)) {
            // The deepest module both paths are in, and the child of it each lies in.
            let common = r.from.iter().zip(&r.to).take_while(|(a, b)| a == b).count();
            let (Some(a), Some(b)) = (r.from.get(common), r.to.get(common)) else {
                continue;
            };
            let parent = r.from[..common].to_vec();
            let sibling = |name: &String| {
                let mut m = parent.clone();
                m.push(name.clone());
                modules.contains(&m)
            };
            if sibling(a) && sibling(b) {
                out.entry(parent)
                    .or_default()
                    .entry((a.clone(), b.clone()))
                    .or_insert_with(|| format!("{}:{}", rel.display(), r.line));
            }
        }
    }
    out
}

/// One directory's modules and the edges between them (where each is written).
type Edges = BTreeMap<(String, String), String>;

fn next<'e>(edges: &'e Edges, n: &str) -> impl Iterator<Item = &'e String> + 'e {
    let n = n.to_string();
    edges.keys().filter(move |(a, _)| *a == n).map(|(_, b)| b)
}

/// The modules reachable from `from` (itself only through a cycle).
fn reach<'e>(edges: &'e Edges, from: &str) -> BTreeSet<&'e String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(n) = todo.pop() {
        for m in next(edges, &n) {
            if seen.insert(m) {
                todo.push(m.clone());
            }
        }
    }
    seen
}

/// The shortest cycle through `start`, as `start, …, start` (breadth first).
fn shortest_cycle(edges: &Edges, start: &String) -> Vec<String> {
    let mut came_from: BTreeMap<&String, &String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        for m in next(edges, n) {
            if m == start {
                let mut path = vec![n.clone()];
                let mut at = n;
                while at != start {
                    at = came_from[at];
                    path.push(at.clone());
                }
                path.reverse();
                path.push(start.clone());
                return path;
            }
            if !came_from.contains_key(m) {
                came_from.insert(m, n);
                queue.push_back(m);
            }
        }
    }
    Vec::new()
}

/// The import cycles among sibling modules: one per group of modules that all reach each
/// other, as the group and its shortest cycle `a → b → … → a`, with where each step is
/// written.
fn cycles(graphs: &Graphs) -> Vec<String> {
    let mut found = Vec::new();
    for (parent, edges) in graphs {
        let scope = if parent.is_empty() {
            "top level".to_string()
        } else {
            parent.join("::")
        };
        let mut reported: BTreeSet<BTreeSet<&String>> = BTreeSet::new();
        for start in edges.keys().map(|(a, _)| a) {
            let group: BTreeSet<&String> = reach(edges, start)
                .into_iter()
                .filter(|m| reach(edges, m).contains(start))
                .collect();
            if group.is_empty() || !reported.insert(group.clone()) {
                continue;
            }
            let ring = shortest_cycle(edges, start);
            let steps: Vec<String> = ring
                .windows(2)
                .map(|w| {
                    format!(
                        "{} → {} ({})",
                        w[0],
                        w[1],
                        edges[&(w[0].clone(), w[1].clone())]
                    )
                })
                .collect();
            let members: Vec<&str> = group.iter().map(|m| m.as_str()).collect();
            found.push(format!(
                "in {scope}, {} reach each other: {}",
                members.join(", "),
                steps.join(", ")
            ));
        }
    }
    found
}

#[test]
fn no_import_cycle_between_the_modules_of_a_crate() {
    let mut problems = Vec::new();
    for (package, dir) in LAYERS {
        let files = sources(&root().join(dir).join("src"));
        assert!(!files.is_empty(), "{dir}/src has no source");
        for c in cycles(&graphs(&files)) {
            problems.push(format!("{package}: {c}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------
// The checks can fail

fn made_up(files: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
    files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect()
}

#[test]
fn a_made_up_cycle_is_found_and_comments_strings_and_globs_are_not_edges() {
    let files = made_up(&[
        (
            "lib.rs",
            "pub mod plan;\npub mod catalog;\npub mod checks;\n",
        ),
        (
            "plan.rs",
            "// crate::catalog in a comment\nfn f() -> &'static str { \"crate::catalog\" }\n",
        ),
        (
            "catalog.rs",
            "use crate::{checks::View, plan::{self, Plan}};\n",
        ),
        (
            "checks/mod.rs",
            "mod ring;\nmod view;\npub use view::View;\n",
        ),
        ("checks/view.rs", "use super::*;\nuse crate::plan::Plan;\n"),
        (
            "checks/ring.rs",
            "use super::view::View;\n#[cfg(test)]\nmod tests {\n    use super::super::view;\n}\n",
        ),
    ]);
    assert_eq!(cycles(&graphs(&files)), Vec::<String>::new());
    // A back-edge: the plan imports the catalog that imports it.
    let mut back = files.clone();
    back[1].1.push_str("fn g() { crate::catalog::run(); }\n");
    let found = cycles(&graphs(&back));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("catalog → plan (catalog.rs:1)")
            && found[0].contains("plan → catalog (plan.rs:3)"),
        "{found:?}"
    );
    // Between siblings below the top level, and through `super` in an inline test module.
    let mut inner = files;
    inner[4]
        .1
        .push_str("#[cfg(test)]\nmod tests {\n    use super::super::ring::X;\n}\n");
    let found = cycles(&graphs(&inner));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("in checks, ring, view reach each other: "),
        "{found:?}"
    );
}

#[test]
fn a_made_up_upward_dependency_is_found() {
    let judge =
        "[package]\nname = \"capring-judge\"\n[dependencies]\ncapring-observe.workspace = true\n";
    assert!(upward_dependencies(judge, 2).is_empty());
    let up = format!(
        "{judge}[dev-dependencies]\nr = {{ package = \"capring-report\", path = \"../report\" }}\n"
    );
    assert_eq!(upward_dependencies(&up, 2).len(), 1);
    let observe = "[package]\nname = \"capring-observe\"\n[target.'cfg(unix)'.dependencies]\ncapring-judge = { path = \"../judge\" }\n";
    assert_eq!(upward_dependencies(observe, 1).len(), 1);
}
