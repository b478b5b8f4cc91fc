//! No new import circle between the files of `crates/failover` and `crates/node-agent`.
//!
//! Every `.rs` file of each crate's `src/` (the binaries of `src/bin/` aside: each is a crate of its own, and
//! nothing can import it) is a node. A file depends on another when it names, anywhere in its code, a path
//! into the other file's module: `crate::a::b`, `super::x`, `super::super::x`, `self::x`, a path that starts
//! with one of its own child modules (`config::AgentConfig` in `agent/mod.rs`, the same as
//! `self::config::AgentConfig`), `use crate::{a, b::c}` groups, and paths inline in code
//! (`crate::cli::print_announced(`). A path goes to the file of its longest prefix that is a module with a file
//! of its own (`crate::model::StatusReport` to `model.rs`, `super::Agent` from `agent/x.rs` to
//! `agent/mod.rs`). A file's `mod x;` declarations are not references. Comments and string literals are
//! skipped; inline modules (`mod kinds { ... }`, `#[cfg(test)] mod tests { ... }`) count as part of their
//! file: the references of the test modules are included (they are compiled with the crate's tests).
//!
//! The circles are the strongly connected components of more than one file (Tarjan's algorithm). They must be
//! exactly [`KNOWN_CIRCLES`]: a new circle fails, naming its files; a circle that is gone or shrank fails too,
//! asking to update the list, which therefore only shrinks.
//!
//! Besides, the files of node-agent outside `agent/` (the commands, the JSON types, the lifecycle) do not use
//! the daemon's modules (`agent/`), but for [`DAEMON_IMPORTS_ALLOWED`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The circles that remain, each as the sorted list of its files (from the workspace root). Remove an entry
/// (or replace it with what is left of it) when a change breaks a circle; never add one.
const KNOWN_CIRCLES: &[&[&str]] = &[
    // None left: keep it so.
];

/// The crates checked: their `src/` directories, from the workspace root.
const CRATES: &[&str] = &["crates/failover/src", "crates/node-agent/src"];

#[test]
fn the_import_graph_has_no_new_circle() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut graph = Graph::new();
    for krate in CRATES {
        let files = read_crate(&workspace, krate);
        assert!(files.len() > 1, "no source files found under {krate}");
        graph.add_crate(krate, &files);
    }
    let found = graph.circles();
    let known: BTreeSet<Vec<String>> =
        KNOWN_CIRCLES.iter().map(|c| c.iter().map(|f| f.to_string()).collect()).collect();
    for circle in &known {
        let mut sorted = circle.clone();
        sorted.sort();
        assert_eq!(&sorted, circle, "KNOWN_CIRCLES: write each circle's files sorted");
    }
    let mut problems = Vec::new();
    for circle in found.difference(&known) {
        match known.iter().find(|k| circle.iter().all(|f| k.contains(f))) {
            Some(k) => problems.push(format!(
                "the circle {k:?} shrank to {circle:?}: replace it with the smaller one in KNOWN_CIRCLES"
            )),
            None => problems.push(format!("a new import circle between {circle:?}: break it (see the edges below)")),
        }
    }
    for circle in known.difference(&found) {
        if !found.iter().any(|f| f.iter().all(|x| circle.contains(x))) {
            problems.push(format!("the circle {circle:?} is gone: remove it from KNOWN_CIRCLES"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nthe circles of the import graph now:\n{}",
        problems.join("\n"),
        graph.describe()
    );
}

/// Files of node-agent outside `agent/` that may still name the daemon's modules (`agent/`), and which of them.
const DAEMON_IMPORTS_ALLOWED: &[(&str, &str)] = &[
    // None left: keep it so.
];

#[test]
fn the_commands_and_the_shared_modules_do_not_import_the_daemon() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let krate = "crates/node-agent/src";
    let mut graph = Graph::new();
    graph.add_crate(krate, &read_crate(&workspace, krate));
    let daemon = format!("{krate}/agent/");
    let mut wrong = Vec::new();
    for (from, targets) in graph.edges.iter().filter(|(f, _)| !f.starts_with(&daemon)) {
        for to in targets.iter().filter(|t| t.starts_with(&daemon)) {
            if !DAEMON_IMPORTS_ALLOWED.contains(&(from.as_str(), to.as_str())) {
                wrong.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "only the daemon's own modules use crate::agent (the rest share crate::model and the like):\n{}",
        wrong.join("\n")
    );
    for (from, to) in DAEMON_IMPORTS_ALLOWED {
        assert!(graph.edges[*from].contains(*to), "{from} no longer uses {to}: remove it from DAEMON_IMPORTS_ALLOWED");
    }
}

#[test]
fn the_checker_finds_a_circle_and_only_a_circle() {
    // a -> b -> a and a <-> a/inner (one circle); d uses a and c; d's comments and strings name b.
    let files = |b_calls_a: bool| -> Vec<(PathBuf, String)> {
        let b = if b_calls_a { "pub fn g() { crate::a::f(); }" } else { "pub fn g() {}" };
        vec![
            ("lib.rs".into(), "pub mod a;\npub mod b;\npub mod c;\npub mod d;\n".into()),
            ("a/mod.rs".into(), "mod inner;\nuse crate::{b::{self, g}, c as see};\npub fn f() { inner::h() }\n".into()),
            ("a/inner.rs".into(), "pub fn h() { super::f(); }\n".into()),
            ("b.rs".into(), b.into()),
            ("c.rs".into(), "pub struct C;\n".into()),
            (
                "d.rs".into(),
                "use super::a;\n// crate::b::g\nconst S: &str = \"crate::b::g\";\nfn lt<'a>(x: &'a str) -> char { '\"' }\n\
                 #[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::c;\n}\n"
                    .into(),
            ),
        ]
    };
    let mut graph = Graph::new();
    graph.add_crate("x/src", &files(true));
    let edges = |g: &Graph, from: &str| -> Vec<String> {
        g.edges[&format!("x/src/{from}")].iter().map(|t| t.trim_start_matches("x/src/").to_string()).collect()
    };
    assert_eq!(edges(&graph, "lib.rs"), Vec::<String>::new(), "mod declarations are not references");
    assert_eq!(edges(&graph, "a/mod.rs"), ["a/inner.rs", "b.rs", "c.rs"], "groups, renames and child paths");
    assert_eq!(edges(&graph, "a/inner.rs"), ["a/mod.rs"]);
    assert_eq!(edges(&graph, "c.rs"), Vec::<String>::new());
    assert_eq!(
        edges(&graph, "d.rs"),
        ["a/mod.rs", "c.rs"],
        "comments and strings skipped; a test module's super is its file"
    );
    let circles = graph.circles();
    let want: Vec<String> = ["x/src/a/inner.rs", "x/src/a/mod.rs", "x/src/b.rs"].map(String::from).to_vec();
    assert_eq!(circles, BTreeSet::from([want]));
    assert!(graph.describe().contains("x/src/b.rs -> x/src/a/mod.rs"), "{}", graph.describe());

    let mut graph = Graph::new();
    graph.add_crate("x/src", &files(false));
    // a/mod.rs <-> a/inner.rs remains: a parent and the child that calls back into it.
    let want: Vec<String> = ["x/src/a/inner.rs", "x/src/a/mod.rs"].map(String::from).to_vec();
    assert_eq!(graph.circles(), BTreeSet::from([want]));
    let mut graph = Graph::new();
    let mut acyclic = files(false);
    acyclic[2].1 = "pub fn h() {}\n".into();
    graph.add_crate("x/src", &acyclic);
    assert!(graph.circles().is_empty(), "{}", graph.describe());
}

/// Every `.rs` file under `workspace/krate`, outside `bin/`, as (path under `krate`, text).
fn read_crate(workspace: &Path, krate: &str) -> Vec<(PathBuf, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if path.is_dir() {
                if rel != Path::new("bin") {
                    walk(root, &path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let root = workspace.join(krate);
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out.sort();
    out
}

/// The module a file defines: `lib.rs` the root, `a.rs` and `a/mod.rs` `a`, `a/b.rs` `a::b`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !(parts.is_empty() && stem == "lib") && stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

/// The files of the crates and who names whom.
struct Graph {
    /// Each file (from the workspace root) and the files it names, itself excepted.
    edges: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    fn new() -> Self {
        Graph { edges: BTreeMap::new() }
    }

    /// Adds the files of one crate (`files` as paths under `krate`, with their text).
    fn add_crate(&mut self, krate: &str, files: &[(PathBuf, String)]) {
        let modules: BTreeMap<Vec<String>, String> =
            files.iter().map(|(rel, _)| (module_of(rel), format!("{krate}/{}", rel.display()))).collect();
        for (rel, text) in files {
            let name = format!("{krate}/{}", rel.display());
            let module = module_of(rel);
            let children: BTreeSet<&str> = modules
                .keys()
                .filter(|m| m.len() == module.len() + 1 && m.starts_with(&module))
                .map(|m| m[module.len()].as_str())
                .collect();
            let mut targets = BTreeSet::new();
            for path in references(&module, &children, &strip(text)) {
                let file = (0..=path.len()).rev().find_map(|n| modules.get(&path[..n]));
                if let Some(file) = file.filter(|f| **f != name) {
                    targets.insert(file.clone());
                }
            }
            self.edges.insert(name, targets);
        }
    }

    /// The strongly connected components of more than one file, each sorted (Tarjan's algorithm).
    fn circles(&self) -> BTreeSet<Vec<String>> {
        struct Tarjan<'g> {
            edges: &'g BTreeMap<String, BTreeSet<String>>,
            index: BTreeMap<&'g str, usize>,
            low: BTreeMap<&'g str, usize>,
            stack: Vec<&'g str>,
            on_stack: BTreeSet<&'g str>,
            out: BTreeSet<Vec<String>>,
        }
        impl<'g> Tarjan<'g> {
            fn visit(&mut self, v: &'g str) {
                let i = self.index.len();
                self.index.insert(v, i);
                self.low.insert(v, i);
                self.stack.push(v);
                self.on_stack.insert(v);
                for w in self.edges.get(v).into_iter().flatten() {
                    let w = w.as_str();
                    if !self.index.contains_key(w) {
                        self.visit(w);
                        let low = self.low[v].min(self.low[w]);
                        self.low.insert(v, low);
                    } else if self.on_stack.contains(w) {
                        let low = self.low[v].min(self.index[w]);
                        self.low.insert(v, low);
                    }
                }
                if self.low[v] == self.index[v] {
                    let mut component = Vec::new();
                    loop {
                        let w = self.stack.pop().expect("v is on the stack");
                        self.on_stack.remove(w);
                        component.push(w.to_string());
                        if w == v {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        component.sort();
                        self.out.insert(component);
                    }
                }
            }
        }
        let mut t = Tarjan {
            edges: &self.edges,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            out: BTreeSet::new(),
        };
        for v in self.edges.keys() {
            if !t.index.contains_key(v.as_str()) {
                t.visit(v);
            }
        }
        t.out
    }

    /// Each circle with its edges, for the failure message.
    fn describe(&self) -> String {
        let circles = self.circles();
        if circles.is_empty() {
            return "(none)\n".into();
        }
        let mut out = String::new();
        for circle in circles {
            out.push_str(&format!("circle of {} files:\n", circle.len()));
            for from in &circle {
                for to in self.edges[from].iter().filter(|t| circle.contains(t)) {
                    out.push_str(&format!("  {from} -> {to}\n"));
                }
            }
        }
        out
    }
}

/// `text` with its comments, string literals and character literals blanked out (lines kept).
fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[char]| out.extend(s.iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }));
    while i < c.len() {
        let rest = &c[i..];
        let end = if rest.starts_with(&['/', '/']) {
            i + rest.iter().position(|&ch| ch == '\n').unwrap_or(rest.len())
        } else if rest.starts_with(&['/', '*']) {
            let mut depth = 0;
            let mut j = i;
            while j < c.len() {
                if c[j..].starts_with(&['/', '*']) {
                    depth += 1;
                    j += 2;
                } else if c[j..].starts_with(&['*', '/']) {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j
        } else if c[i] == '"' || (c[i] == 'r' && (i == 0 || !ident(c[i - 1])) && raw_start(rest).is_some()) {
            // A string, or a raw string r"..." / r#"..."#.
            match raw_start(rest).filter(|_| c[i] == 'r') {
                Some(hashes) => {
                    let close: Vec<char> = format!("\"{}", "#".repeat(hashes)).chars().collect();
                    let body = i + hashes + 2;
                    body + c[body..]
                        .windows(close.len())
                        .position(|w| w == close)
                        .map_or(c.len() - body, |p| p + close.len())
                }
                None => {
                    let mut j = i + 1;
                    while j < c.len() && c[j] != '"' {
                        j += if c[j] == '\\' { 2 } else { 1 };
                    }
                    j + 1
                }
            }
        } else if c[i] == '\'' && (rest.get(1) == Some(&'\\') || rest.get(2) == Some(&'\'')) {
            // A character literal (a lifetime has no closing quote right after one character).
            let mut j = i + 1;
            while j < c.len() && c[j] != '\'' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            j + 1
        } else {
            out.push(c[i]);
            i += 1;
            continue;
        };
        let end = end.min(c.len());
        blank(&mut out, &c[i..end]);
        i = end;
    }
    out
}

/// `Some(number of #)` when `s` starts a raw string: `r"`, `r#"`, `r##"`...
fn raw_start(s: &[char]) -> Option<usize> {
    let hashes = s.iter().skip(1).take_while(|&&ch| ch == '#').count();
    (s.first() == Some(&'r') && s.get(1 + hashes) == Some(&'"')).then_some(hashes)
}

fn ident(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_' || ch == '$'
}

/// The module paths (from the crate root) that the code of the file of `module` names: every path that
/// starts with `crate`, `super`, `self` or one of `children`, `use` groups expanded.
fn references(module: &[String], children: &BTreeSet<&str>, code: &str) -> Vec<Vec<String>> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    // The inline modules open at each point (`mod name {`), with the depth of braces they opened at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '{' => {
                depth += 1;
                i += 1;
                continue;
            }
            '}' => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                i += 1;
                continue;
            }
            ch if !ident(ch) || (i > 0 && ident(c[i - 1])) => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let (word, after) = word_at(&c, i);
        // `mod name {`: an inline module begins.
        if word == "mod" {
            let (name, after_name) = word_at(&c, skip_ws(&c, after));
            if !name.is_empty() && c.get(skip_ws(&c, after_name)) == Some(&'{') {
                inline.push((name, depth));
            }
            i = after;
            continue;
        }
        let preceded_by_path = {
            let before = c[..i].iter().rev().find(|ch| !ch.is_whitespace());
            before == Some(&':') && i >= 2 && c[..i].iter().rev().filter(|ch| !ch.is_whitespace()).nth(1) == Some(&':')
        };
        let here: Vec<String> = module.iter().cloned().chain(inline.iter().map(|(n, _)| n.clone())).collect();
        let is_root = matches!(word.as_str(), "crate" | "super" | "self")
            || (inline.is_empty() && children.contains(word.as_str()));
        let next = skip_ws(&c, after);
        if preceded_by_path || !is_root || !c[next..].starts_with(&[':', ':']) || in_visibility(&c, i) {
            i = after;
            continue;
        }
        let base = match word.as_str() {
            "crate" => Vec::new(),
            "self" => here.clone(),
            "super" => here[..here.len().saturating_sub(1)].to_vec(),
            child => here.iter().cloned().chain([child.to_string()]).collect(),
        };
        i = tree(&c, next + 2, base, &mut out);
    }
    out
}

/// Whether the word at `i` sits in `pub(in ...)`.
fn in_visibility(c: &[char], i: usize) -> bool {
    let before: String = c[..i].iter().collect();
    let before = before.trim_end();
    before.strip_suffix("in").is_some_and(|b| b.trim_end().ends_with('('))
}

/// The identifier at `i` (may be empty) and the index after it.
fn word_at(c: &[char], i: usize) -> (String, usize) {
    let end = i + c[i..].iter().take_while(|&&ch| ident(ch)).count();
    (c[i..end].iter().collect(), end)
}

fn skip_ws(c: &[char], i: usize) -> usize {
    i + c[i..].iter().take_while(|ch| ch.is_whitespace()).count()
}

/// Reads the rest of a path after `base::` (segments, then maybe a `{...}` group or `*`), pushing each full
/// path to `out`; returns the index after it. `super` segments climb, `self` in a group names the module.
fn tree(c: &[char], mut i: usize, mut base: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    loop {
        i = skip_ws(c, i);
        if c.get(i) == Some(&'{') {
            i += 1;
            loop {
                i = skip_ws(c, i);
                match c.get(i) {
                    None => return i,
                    Some('}') => return i + 1,
                    Some(',') => i += 1,
                    Some(_) => {
                        let (word, after) = word_at(c, i);
                        if word.is_empty() {
                            // `*` or something unexpected: the group names its base.
                            out.push(base.clone());
                            i += 1;
                        } else if word == "self" {
                            out.push(base.clone());
                            i = after;
                        } else {
                            i = tree(c, i, base.clone(), out);
                        }
                        // Skip a rename (`as x`) up to the next `,` or `}`.
                        while i < c.len() && !matches!(c[i], ',' | '}') {
                            i += 1;
                        }
                    }
                }
            }
        }
        let (word, after) = word_at(c, i);
        if word.is_empty() {
            out.push(base);
            return i;
        }
        match word.as_str() {
            "super" => {
                base.pop();
            }
            "self" => {}
            _ => base.push(word),
        }
        let next = skip_ws(c, after);
        if c[next..].starts_with(&[':', ':']) && !c[next..].starts_with(&[':', ':', '<']) {
            i = next + 2;
        } else {
            out.push(base);
            return after;
        }
    }
}
