//! The configuration reference (`## Configuration reference` in docs/failover.md) against the code, both ways.
//!
//! - Docs to code: every documented key, set to a value of its documented type, parses (the configuration
//!   types refuse unknown keys); a key documented as required is refused when missing; a documented default
//!   written as a TOML value is the one the code takes.
//! - Code to docs: the keys the configuration types accept, found by tracing their `Deserialize` impls (so
//!   a key added to a struct is seen, in whatever table), are all documented, with a matching type.
//! - The examples `config/agent.toml` and `config/cluster.toml` parse, also with every commented-out key
//!   uncommented, and every key they show (commented or not) is documented.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use failover::placement::{ClusterConfig, ClusterFile};
use node_agent::agent::config::AgentConfig;
use serde::de::DeserializeOwned;
use serde_reflection::{ContainerFormat, Format, Registry, Tracer, TracerConfig};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The two files the reference documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum File {
    Agent,
    Cluster,
}

/// Where a key lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Table {
    /// The top level.
    Top,
    /// `[name]`.
    Plain(String),
    /// `[[name]]`, repeated.
    Array(String),
    /// `[name.NAME]`, one per NAME.
    Named(String),
}

impl Table {
    fn parse(header: &str) -> Table {
        if let Some(name) = header.strip_prefix("[[").and_then(|h| h.strip_suffix("]]")) {
            return Table::Array(name.to_string());
        }
        let inner = header.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or_else(|| {
            panic!("{header:?} is not a table header");
        });
        match inner.split_once('.') {
            Some((name, _)) => Table::Named(name.to_string()),
            None => Table::Plain(inner.to_string()),
        }
    }

    /// The header that opens it in a document (`[vservers.v1]` for one vserver).
    fn header(&self) -> Option<String> {
        match self {
            Table::Top => None,
            Table::Plain(n) => Some(format!("[{n}]")),
            Table::Array(n) => Some(format!("[[{n}]]")),
            Table::Named(n) => Some(format!("[{n}.v1]")),
        }
    }

    /// A key of it as the reference writes it.
    fn key(&self, key: &str) -> String {
        match self {
            Table::Top => key.to_string(),
            Table::Plain(n) => format!("[{n}] {key}"),
            Table::Array(n) => format!("[[{n}]] {key}"),
            Table::Named(n) => format!("[{n}.NAME] {key}"),
        }
    }
}

/// What kind of value a key takes, as far as TOML goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Address,
    Integer,
    Boolean,
    Strings,
}

/// One row of the reference.
#[derive(Debug, Clone)]
struct Entry {
    table: Table,
    key: String,
    ty: String,
    default: String,
}

impl Entry {
    fn name(&self) -> String {
        self.table.key(&self.key)
    }

    fn kind(&self) -> Kind {
        match self.ty.as_str() {
            "string" | "path" | "URL" => Kind::Text,
            "address" => Kind::Address,
            "integer" => Kind::Integer,
            "boolean" => Kind::Boolean,
            "array of strings" => Kind::Strings,
            other => panic!("{}: unknown type {other:?} in the reference", self.name()),
        }
    }

    /// A plausible value of the documented type, in TOML.
    fn sample(&self) -> &'static str {
        match self.ty.as_str() {
            "string" => "\"h9\"",
            "path" => "\"/srv/x\"",
            "URL" => "\"http://127.0.0.1:7071\"",
            "address" => "\"127.0.0.1:7070\"",
            "integer" => "7",
            "boolean" => "true",
            "array of strings" => "[\"h2\"]",
            other => panic!("{}: unknown type {other:?} in the reference", self.name()),
        }
    }

    fn required(&self) -> bool {
        self.default == "required"
    }

    /// The default when the reference writes it as a TOML value (in backticks), else `None` (words).
    fn literal_default(&self) -> Option<String> {
        let inner = self.default.strip_prefix('`')?.strip_suffix('`')?;
        if inner.contains('`') {
            return None;
        }
        toml::from_str::<toml::Table>(&format!("v = {inner}")).ok().map(|_| inner.to_string())
    }
}

/// The reference's rows, per file, read from docs/failover.md.
fn reference() -> BTreeMap<File, Vec<Entry>> {
    let path = repo().join("docs/failover.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines().skip_while(|l| *l != "## Configuration reference");
    assert!(lines.next().is_some(), "{} has no `## Configuration reference` section", path.display());
    let mut file = None;
    let mut out: BTreeMap<File, Vec<Entry>> = BTreeMap::new();
    for line in lines.take_while(|l| !l.starts_with("## ")) {
        if let Some(heading) = line.strip_prefix("### ") {
            file = if heading.contains("agent.toml") {
                Some(File::Agent)
            } else if heading.contains("cluster.toml") {
                Some(File::Cluster)
            } else {
                None
            };
            continue;
        }
        if !line.starts_with("| `") {
            continue;
        }
        let file = file.unwrap_or_else(|| panic!("a row outside the agent.toml and cluster.toml tables: {line}"));
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [key, ty, default, meaning] = cells[..] else {
            panic!("a row of the reference has {} cells, not 4 (key, type, default, meaning): {line}", cells.len())
        };
        assert!(!meaning.is_empty() && !default.is_empty(), "a row without a default or a meaning: {line}");
        let key = key.trim_matches('`');
        let (table, key) = match key.rsplit_once(' ') {
            Some((header, key)) => (Table::parse(header), key),
            None => (Table::Top, key),
        };
        let entry = Entry { table, key: key.to_string(), ty: ty.to_string(), default: default.to_string() };
        entry.kind(); // an unknown type fails here, naming the row
        out.entry(file).or_default().push(entry);
    }
    for (file, entries) in &out {
        let mut seen = BTreeSet::new();
        for e in entries {
            assert!(seen.insert(e.name()), "{file:?}: `{}` is documented twice", e.name());
        }
    }
    assert!(out.contains_key(&File::Agent) && out.contains_key(&File::Cluster), "both tables are there: {out:?}");
    out
}

/// The keys a configuration type accepts, with their kind, from its `Deserialize` impl.
fn accepted<T: DeserializeOwned>() -> BTreeMap<String, Kind> {
    let mut tracer = Tracer::new(TracerConfig::default());
    // Enums inside a struct are traced on their own first, so that all their variants are known.
    tracer.trace_simple_type::<SocketAddr>().unwrap();
    let (root, _) = tracer.trace_simple_type::<T>().unwrap();
    let registry = tracer.registry().unwrap();
    let mut out = BTreeMap::new();
    for (key, format) in fields(&registry, &root) {
        let format = strip_option(format);
        let nested = |f: &Format| struct_fields(&registry, strip_option(f));
        let (table, inner) = match format {
            Format::Seq(item) if nested(item).is_some() => (Table::Array(key.clone()), nested(item)),
            Format::Map { value, .. } if nested(value).is_some() => (Table::Named(key.clone()), nested(value)),
            f if nested(f).is_some() => (Table::Plain(key.clone()), nested(f)),
            f => {
                out.insert(key.clone(), kind(&registry, f, &key));
                continue;
            }
        };
        for (sub, format) in inner.unwrap() {
            let name = table.key(sub);
            assert!(
                struct_fields(&registry, strip_option(format)).is_none(),
                "{name}: tables nested two deep are not handled here; extend this test and the reference"
            );
            let k = kind(&registry, format, &name);
            out.insert(name, k);
        }
    }
    out
}

fn strip_option(f: &Format) -> &Format {
    match f {
        Format::Option(inner) => strip_option(inner),
        f => f,
    }
}

fn struct_fields<'a>(registry: &'a Registry, f: &Format) -> Option<Vec<(&'a String, &'a Format)>> {
    let Format::TypeName(name) = f else { return None };
    match registry.get(name) {
        Some(ContainerFormat::Struct(fields)) => Some(fields.iter().map(|n| (&n.name, &n.value)).collect()),
        _ => None,
    }
}

fn fields<'a>(registry: &'a Registry, root: &Format) -> Vec<(String, &'a Format)> {
    struct_fields(registry, root)
        .expect("a configuration is a struct")
        .into_iter()
        .map(|(k, f)| (k.clone(), f))
        .collect()
}

fn kind(registry: &Registry, f: &Format, key: &str) -> Kind {
    match strip_option(f) {
        Format::Str => Kind::Text,
        Format::Bool => Kind::Boolean,
        Format::U8 | Format::U16 | Format::U32 | Format::U64 | Format::I32 | Format::I64 => Kind::Integer,
        Format::Seq(item) if matches!(**item, Format::Str) => Kind::Strings,
        Format::TypeName(name) if name == "SocketAddr" && registry.contains_key(name) => Kind::Address,
        other => panic!("{key}: a value of format {other:?}, which this test does not know; extend it"),
    }
}

/// A document (of the file `entries` describe) that sets `set` in `table`, with every required key of the top
/// level and of `table` at a sample value, but `omit` of `table`.
fn document(entries: &[Entry], table: &Table, set: &[(&str, &str)], omit: Option<&str>) -> String {
    let lines = |t: &Table| -> Vec<String> {
        let mut lines: Vec<String> = entries
            .iter()
            .filter(|e| &e.table == t && e.required())
            .filter(|e| !(t == table && (Some(e.key.as_str()) == omit || set.iter().any(|(k, _)| *k == e.key))))
            .map(|e| format!("{} = {}", e.key, e.sample()))
            .collect();
        if t == table {
            lines.extend(set.iter().map(|(k, v)| format!("{k} = {v}")));
        }
        lines
    };
    let mut doc = lines(&Table::Top).join("\n");
    if let Some(header) = table.header() {
        doc.push_str(&format!("\n{header}\n{}", lines(table).join("\n")));
    }
    doc.push('\n');
    doc
}

/// Parses a document of `file` as its type (keys and types only: no check of the values), for comparison.
fn parse(file: File, doc: &str) -> Result<String, String> {
    match file {
        File::Agent => toml::from_str::<AgentConfig>(doc).map(|c| format!("{c:?}")),
        File::Cluster => toml::from_str::<ClusterFile>(doc).map(|c| format!("{c:?}")),
    }
    .map_err(|e| e.to_string())
}

fn accepted_by(file: File) -> BTreeMap<String, Kind> {
    match file {
        File::Agent => accepted::<AgentConfig>(),
        File::Cluster => accepted::<ClusterFile>(),
    }
}

#[test]
fn every_key_the_code_accepts_is_documented_with_its_type() {
    let reference = reference();
    let mut problems = Vec::new();
    for (file, entries) in &reference {
        let documented: BTreeMap<String, &Entry> = entries.iter().map(|e| (e.name(), e)).collect();
        let accepted = accepted_by(*file);
        for (key, kind) in &accepted {
            match documented.get(key) {
                None => problems.push(format!("{file:?}: `{key}` is accepted by the code but not documented")),
                Some(e) if e.kind() != *kind => {
                    problems.push(format!("{file:?}: `{key}` is documented as {} but the code takes {kind:?}", e.ty))
                }
                Some(_) => {}
            }
        }
        for key in documented.keys().filter(|k| !accepted.contains_key(*k)) {
            problems.push(format!("{file:?}: `{key}` is documented but the code accepts no such key"));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/failover.md's configuration reference and the code differ:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_documented_key_parses_with_its_type_default_and_requirement() {
    for (file, entries) in reference() {
        for table in entries.iter().map(|e| &e.table).collect::<BTreeSet<_>>() {
            let bare = document(&entries, table, &[], None);
            parse(file, &bare)
                .unwrap_or_else(|e| panic!("{file:?}: the required keys alone do not parse:\n{bare}\n{e}"));
        }
        for e in &entries {
            let name = e.name();
            let doc = document(&entries, &e.table, &[(&e.key, e.sample())], None);
            if let Err(err) = parse(file, &doc) {
                panic!(
                    "{file:?}: `{name}` set to {} (a value of type {}) does not parse:\n{doc}\n{err}",
                    e.sample(),
                    e.ty
                );
            }
            // A value of another type is refused, so the documented type is the one the code takes.
            let wrong = if e.kind() == Kind::Boolean { "\"no\"" } else { "false" };
            let doc = document(&entries, &e.table, &[(&e.key, wrong)], None);
            assert!(parse(file, &doc).is_err(), "{file:?}: `{name}` takes {wrong} as well as a value of type {}", e.ty);
            if e.required() {
                let doc = document(&entries, &e.table, &[], Some(&e.key));
                let err = parse(file, &doc).expect_err(&format!("{file:?}: `{name}` is documented as required"));
                assert!(err.contains(&format!("missing field `{}`", e.key)), "{name}: {err}");
            }
            if let Some(default) = e.literal_default() {
                let with = document(&entries, &e.table, &[(&e.key, &default)], None);
                let without = document(&entries, &e.table, &[], None);
                assert_eq!(
                    parse(file, &with).unwrap(),
                    parse(file, &without).unwrap(),
                    "{file:?}: `{name}`'s default is documented as {default}, which is not what the code takes"
                );
            }
        }
    }
}

/// An example file with its commented-out settings (`#key = value`, `#[table]`) uncommented.
fn uncommented(text: &str) -> String {
    // Settings follow the `#` directly; prose has a space first.
    let setting = |l: &str| {
        l.starts_with('[')
            || l.split_once(" = ")
                .is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    };
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if setting(rest) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every key set in a TOML text, as the reference writes it.
fn keys_of(text: &str) -> BTreeSet<String> {
    let value: toml::Table = toml::from_str(text).unwrap();
    let mut out = BTreeSet::new();
    for (key, v) in &value {
        let mut sub = |table: Table, t: &toml::Table| out.extend(t.keys().map(|k| table.key(k)));
        match v {
            // A table of tables: one per NAME (`[vservers.NAME]`).
            toml::Value::Table(t) if !t.is_empty() && t.values().all(toml::Value::is_table) => {
                for t in t.values() {
                    sub(Table::Named(key.clone()), t.as_table().unwrap());
                }
            }
            toml::Value::Table(t) => sub(Table::Plain(key.clone()), t),
            toml::Value::Array(a) if a.iter().all(toml::Value::is_table) && !a.is_empty() => {
                for t in a {
                    sub(Table::Array(key.clone()), t.as_table().unwrap());
                }
            }
            _ => {
                out.insert(key.clone());
            }
        }
    }
    out
}

#[test]
fn the_examples_parse_and_show_documented_keys_only() {
    let reference = reference();
    let documented = |file: File| reference[&file].iter().map(Entry::name).collect::<BTreeSet<_>>();
    let dir = repo().join("config");
    let agent_path = dir.join("agent.toml");
    let agent_text = std::fs::read_to_string(&agent_path).unwrap();
    let agent = AgentConfig::parse(&agent_path, &agent_text).unwrap();
    let all = uncommented(&agent_text);
    AgentConfig::parse(&agent_path, &all)
        .unwrap_or_else(|e| panic!("config/agent.toml with every commented setting uncommented: {e}\n{all}"));
    let cluster_path = dir.join("cluster.toml");
    let cluster_text = std::fs::read_to_string(&cluster_path).unwrap();
    let hosts: BTreeSet<String> = agent.peers.iter().map(|p| p.name.clone()).chain([agent.node.clone()]).collect();
    let load = |text: &str| ClusterConfig::parse(&cluster_path, text, &hosts, &agent.node, |_| true);
    load(&cluster_text).unwrap();
    let all_cluster = uncommented(&cluster_text);
    load(&all_cluster).unwrap_or_else(|e| panic!("config/cluster.toml, uncommented: {e}\n{all_cluster}"));
    for (file, text) in [(File::Agent, &all), (File::Cluster, &all_cluster)] {
        let shown = keys_of(text);
        let documented = documented(file);
        let missing: Vec<_> = shown.difference(&documented).collect();
        assert!(missing.is_empty(), "{file:?}: the example shows undocumented keys: {missing:?}");
        assert!(shown.len() > 3, "{file:?}: the example's keys are found: {shown:?}");
    }
}

#[test]
fn an_unknown_key_is_refused_in_every_table() {
    // What the comparison relies on: the configuration types refuse keys they do not know, in every table.
    let reference = reference();
    for (file, entries) in &reference {
        for table in entries.iter().map(|e| &e.table).collect::<BTreeSet<_>>() {
            let doc = document(entries, table, &[("no_such_key", "1")], None);
            let err = parse(*file, &doc).expect_err(&format!("{file:?}: an unknown key in {table:?} is refused"));
            assert!(err.contains("no_such_key"), "{err}");
        }
    }
}
