//! The module graph of a crate, read from its sources, and its import
//! cycles. The workspace test below holds `provider/core`, `preflight` and
//! `provider` to "no file imports itself through other files".
//!
//! Nodes are files: each crate target (`lib.rs`, `main.rs`) with the module
//! files its `mod` declarations reach; an inline module belongs to its
//! file. An arrow `a.rs -> b.rs` is a path in `a.rs` that names an item of
//! `b.rs`: `use crate::…`, `use super::…`, `use self::…`, a `use` of a child
//! module, and the same paths written in code (`crate::x::f()`). A path
//! through an import (`use crate::x::Y` in `m.rs`, then `super::Y` in a
//! child of `m`) is followed to the file that defines the item, as is a
//! path through a re-export (`pub use`).
//!
//! Two things are not arrows:
//! - a module's `pub use` of its own descendants: that is its public face
//!   (`config/mod.rs` re-exporting `config::validate::parse_yaml`), and the
//!   descendant's use of its parent's types is the usual shape of a module
//!   tree;
//! - code behind `#[cfg(test)]`: test modules may use fixtures of any other
//!   module; the layering that matters is the one that ships.
//!
//! The reader works on tokens, not on a syntax tree: comments, string and
//! character literals are skipped, and a path is any `a::b::c` chain. That
//! is enough for this workspace's sources (no `#[path]` attributes, no
//! macros that make modules); a path spelled inside a string (a serde
//! attribute) is not seen.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};

/// A module's path from its crate root (empty for the root).
type ModPath = Vec<String>;

/// One crate target's module graph.
#[derive(Debug, Default)]
pub struct ModuleGraph {
    /// Where the files were read from.
    pub src_dir: PathBuf,
    /// The target's root file (`lib.rs`, `main.rs`), relative to `src_dir`.
    pub root: PathBuf,
    /// Every file of the target, relative to `src_dir`.
    pub files: BTreeSet<PathBuf>,
    /// `from -> to -> the paths, as written in from, that tie them`.
    pub edges: BTreeMap<PathBuf, BTreeMap<PathBuf, BTreeSet<String>>>,
}

/// Files that import each other in a loop: a strongly connected set of the
/// graph with the arrows between its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub files: Vec<PathBuf>,
    /// One shortest loop through the first file, for orientation.
    pub shortest: Vec<PathBuf>,
    /// `(from, to, paths)` for every arrow inside the set.
    pub ties: Vec<(PathBuf, PathBuf, Vec<String>)>,
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |files: &[PathBuf]| files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>();
        writeln!(f, "{} files: {}", self.files.len(), names(&self.files).join(", "))?;
        writeln!(f, "  shortest loop: {}", names(&self.shortest).join(" -> "))?;
        for (from, to, paths) in &self.ties {
            writeln!(f, "  {} -> {}: {}", from.display(), to.display(), paths.join(", "))?;
        }
        Ok(())
    }
}

/// Reads every crate target under `src_dir` (`lib.rs`, `main.rs`).
pub fn read_crate(src_dir: &Path) -> std::io::Result<Vec<ModuleGraph>> {
    let mut out = Vec::new();
    for root in ["lib.rs", "main.rs"] {
        if src_dir.join(root).is_file() {
            out.push(read_target(src_dir, Path::new(root))?);
        }
    }
    Ok(out)
}

/// Reads one crate target: the root file and every module file its `mod`
/// declarations reach.
pub fn read_target(src_dir: &Path, root: &Path) -> std::io::Result<ModuleGraph> {
    let mut modules: BTreeMap<ModPath, Module> = BTreeMap::new();
    let mut refs: Vec<Ref> = Vec::new();
    let mut pending: VecDeque<(ModPath, PathBuf)> = VecDeque::from([(Vec::new(), root.to_path_buf())]);
    let mut files = BTreeSet::new();
    while let Some((path, file)) = pending.pop_front() {
        let text = std::fs::read_to_string(src_dir.join(&file))?;
        files.insert(file.clone());
        let found = scan_file(&tokenize(&text), &path, &file);
        for m in found.modules {
            for child in &m.file_children {
                let mut child_path = m.path.clone();
                child_path.push(child.clone());
                let dir = child_dir(&file, &m.path[path.len()..]);
                let flat = dir.join(format!("{child}.rs"));
                let nested = dir.join(child).join("mod.rs");
                let child_file = if src_dir.join(&flat).is_file() { flat } else { nested };
                pending.push_back((child_path, child_file));
            }
            modules.insert(m.path.clone(), m);
        }
        refs.extend(found.refs);
    }
    let mut graph = ModuleGraph {
        src_dir: src_dir.to_path_buf(),
        root: root.to_path_buf(),
        files,
        edges: BTreeMap::new(),
    };
    let resolver = Resolver { modules: &modules };
    for r in refs {
        let Some(target) = resolver.absolute(&r.module, &r.segments, 0) else {
            continue;
        };
        if r.public_use && target.starts_with(&r.module) {
            continue;
        }
        let Some(target_module) = resolver.module_of(&target, 0) else {
            continue;
        };
        let (Some(from), Some(to)) = (modules.get(&r.module), modules.get(&target_module)) else {
            continue;
        };
        if from.file != to.file {
            graph
                .edges
                .entry(from.file.clone())
                .or_default()
                .entry(to.file.clone())
                .or_default()
                .insert(r.segments.join("::"));
        }
    }
    Ok(graph)
}

/// Where the files of modules declared in `file` (inside its inline modules
/// `inline`) live: beside `lib.rs`, `main.rs` and `mod.rs`, in a folder of
/// the file's name otherwise.
fn child_dir(file: &Path, inline: &[String]) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new("")).to_path_buf();
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let mut dir = if matches!(stem, "lib" | "main" | "mod") {
        parent
    } else {
        parent.join(stem)
    };
    for m in inline {
        dir.push(m);
    }
    dir
}

impl ModuleGraph {
    /// Every set of files that import each other in a loop, largest first.
    pub fn cycles(&self) -> Vec<Cycle> {
        let mut out: Vec<Cycle> = strongly_connected(&self.files, &self.edges)
            .into_iter()
            .filter(|set| set.len() > 1)
            .map(|set| {
                let mut ties = Vec::new();
                for from in &set {
                    for (to, paths) in self.edges.get(from).into_iter().flatten() {
                        if set.contains(to) {
                            ties.push((from.clone(), to.clone(), paths.iter().cloned().collect()));
                        }
                    }
                }
                let files: Vec<PathBuf> = set.iter().cloned().collect();
                let shortest = self.shortest_loop(&files[0], &set);
                Cycle { files, shortest, ties }
            })
            .collect();
        out.sort_by(|a, b| b.files.len().cmp(&a.files.len()).then(a.files.cmp(&b.files)));
        out
    }

    /// A shortest loop from `start` back to itself inside `set`.
    fn shortest_loop(&self, start: &PathBuf, set: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
        let mut came_from: BTreeMap<&PathBuf, &PathBuf> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(at) = queue.pop_front() {
            for next in self.edges.get(at).into_iter().flat_map(BTreeMap::keys) {
                if !set.contains(next) || came_from.contains_key(next) {
                    continue;
                }
                came_from.insert(next, at);
                if next == start {
                    let mut path = vec![start.clone()];
                    let mut cur = came_from[start];
                    while cur != start {
                        path.push(cur.clone());
                        cur = came_from[cur];
                    }
                    path.push(start.clone());
                    path.reverse();
                    return path;
                }
                queue.push_back(next);
            }
        }
        vec![start.clone()]
    }
}

/// Tarjan's strongly connected components.
fn strongly_connected(
    nodes: &BTreeSet<PathBuf>,
    edges: &BTreeMap<PathBuf, BTreeMap<PathBuf, BTreeSet<String>>>,
) -> Vec<BTreeSet<PathBuf>> {
    struct State<'g> {
        edges: &'g BTreeMap<PathBuf, BTreeMap<PathBuf, BTreeSet<String>>>,
        index: BTreeMap<&'g PathBuf, usize>,
        low: BTreeMap<&'g PathBuf, usize>,
        stack: Vec<&'g PathBuf>,
        on_stack: BTreeSet<&'g PathBuf>,
        out: Vec<BTreeSet<PathBuf>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g PathBuf) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        let edges = s.edges;
        for w in edges.get(v).into_iter().flat_map(BTreeMap::keys) {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut set = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                set.insert(w.clone());
                if w == v {
                    break;
                }
            }
            s.out.push(set);
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in nodes {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// A module as the scan found it.
#[derive(Debug, Default)]
struct Module {
    path: ModPath,
    file: PathBuf,
    /// Child modules that live in files of their own.
    file_children: Vec<String>,
    /// Every child module, inline or not.
    children: BTreeSet<String>,
    /// Names brought into the module by `use` (private or public), with
    /// the path as written.
    imports: BTreeMap<String, Vec<String>>,
}

/// A path written in `module`.
#[derive(Debug)]
struct Ref {
    module: ModPath,
    segments: Vec<String>,
    /// A `pub use` (any visibility but private): a re-export.
    public_use: bool,
}

/// Imports followed in a row before a path counts as unresolved (a guard
/// against `use` loops, which rustc refuses anyway).
const MAX_HOPS: usize = 16;

struct Resolver<'m> {
    modules: &'m BTreeMap<ModPath, Module>,
}

impl Resolver<'_> {
    /// `segments`, written in `module`, as a path from the crate root;
    /// `None` for a path into another crate.
    fn absolute(&self, module: &ModPath, segments: &[String], depth: usize) -> Option<Vec<String>> {
        let (first, rest) = segments.split_first()?;
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "self" => module.clone(),
            "super" => module[..module.len().checked_sub(1)?].to_vec(),
            name => {
                let m = self.modules.get(module)?;
                if m.children.contains(name) {
                    let mut p = module.clone();
                    p.push(name.to_owned());
                    p
                } else if let Some(imported) = m.imports.get(name)
                    && depth < MAX_HOPS
                {
                    let mut p = self.absolute(module, imported, depth + 1)?;
                    p.extend(rest.iter().cloned());
                    return Some(p);
                } else {
                    return None;
                }
            }
        };
        let mut rest = rest;
        while let Some((s, more)) = rest.split_first() {
            match s.as_str() {
                "super" => {
                    base.pop()?;
                }
                "self" => {}
                _ => break,
            }
            rest = more;
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// The module that defines the item at the absolute `path`, following
    /// imports and re-exports.
    fn module_of(&self, path: &[String], depth: usize) -> Option<ModPath> {
        let mut module: ModPath = Vec::new();
        for (i, s) in path.iter().enumerate() {
            let m = self.modules.get(&module)?;
            if m.children.contains(s) {
                module.push(s.clone());
                continue;
            }
            if let Some(imported) = m.imports.get(s)
                && depth < MAX_HOPS
            {
                let mut target = self.absolute(&module, imported, 0)?;
                target.extend(path[i + 1..].iter().cloned());
                return self.module_of(&target, depth + 1).or(Some(module));
            }
            break;
        }
        Some(module)
    }
}

/// What one file declares and references.
#[derive(Debug, Default)]
struct FileScan {
    modules: Vec<Module>,
    refs: Vec<Ref>,
}

/// Scans one file's tokens; `path` is the module the file is.
fn scan_file(tokens: &[Tok], path: &ModPath, file: &Path) -> FileScan {
    let mut scan = FileScan::default();
    scan.modules.push(Module {
        path: path.clone(),
        file: file.to_path_buf(),
        ..Default::default()
    });
    // (index into scan.modules, brace depth at which the module's block opened)
    let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let current = stack.last().map_or(0, |s| s.0);
        match &tokens[i] {
            Tok::Punct('#') => {
                let (end, is_test) = attribute(tokens, i);
                i = end;
                if is_test {
                    i = skip_item(tokens, i);
                }
            }
            Tok::Ident(kw) if kw == "mod" => {
                let (Some(Tok::Ident(name)), next) = (tokens.get(i + 1), tokens.get(i + 2)) else {
                    i += 1;
                    continue;
                };
                let module = &mut scan.modules[current];
                module.children.insert(name.clone());
                let mut child_path = module.path.clone();
                child_path.push(name.clone());
                if next == Some(&Tok::Punct('{')) {
                    scan.modules.push(Module {
                        path: child_path,
                        file: file.to_path_buf(),
                        ..Default::default()
                    });
                    depth += 1;
                    stack.push((scan.modules.len() - 1, depth));
                    i += 3;
                } else {
                    module.file_children.push(name.clone());
                    i += 2;
                }
            }
            Tok::Ident(kw) if kw == "use" => {
                let public = is_public(tokens, i);
                let mut leaves = Vec::new();
                let end = use_tree(tokens, i + 1, &mut Vec::new(), &mut leaves);
                let module = &mut scan.modules[current];
                for (segments, name) in leaves {
                    if let Some(name) = name {
                        module.imports.insert(name, segments.clone());
                    }
                    scan.refs.push(Ref {
                        module: module.path.clone(),
                        segments,
                        public_use: public,
                    });
                }
                i = end;
            }
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                if stack.len() > 1 && stack.last().is_some_and(|s| s.1 == depth) {
                    stack.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            Tok::Ident(first) if tokens.get(i + 1) == Some(&Tok::PathSep) => {
                let preceded_by_sep = i > 0 && tokens[i - 1] == Tok::PathSep;
                let mut segments = vec![first.clone()];
                let mut j = i + 1;
                while tokens.get(j) == Some(&Tok::PathSep) {
                    match tokens.get(j + 1) {
                        Some(Tok::Ident(s)) => {
                            segments.push(s.clone());
                            j += 2;
                        }
                        _ => break,
                    }
                }
                if !preceded_by_sep {
                    scan.refs.push(Ref {
                        module: scan.modules[current].path.clone(),
                        segments,
                        public_use: false,
                    });
                }
                i = j;
            }
            _ => i += 1,
        }
    }
    scan
}

/// Reads the attribute at `i` (`#[...]` or `#![...]`); returns the index
/// after it and whether it is `cfg(test)`.
fn attribute(tokens: &[Tok], i: usize) -> (usize, bool) {
    let mut j = i + 1;
    if tokens.get(j) == Some(&Tok::Punct('!')) {
        j += 1;
    }
    if tokens.get(j) != Some(&Tok::Punct('[')) {
        return (i + 1, false);
    }
    let start = j;
    let end = matching(tokens, start);
    let inner = &tokens[start + 1..end.saturating_sub(1).max(start + 1)];
    let is_test = inner
        == [
            Tok::Ident("cfg".into()),
            Tok::Punct('('),
            Tok::Ident("test".into()),
            Tok::Punct(')'),
        ];
    (end, is_test)
}

/// The index after the bracket group that opens at `open`.
fn matching(tokens: &[Tok], open: usize) -> usize {
    let mut depth = 0usize;
    let mut j = open;
    while j < tokens.len() {
        match tokens[j] {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    tokens.len()
}

/// The index after the item that starts at `i`: its `;` or its first
/// brace block, with any further attributes skipped first.
fn skip_item(tokens: &[Tok], mut i: usize) -> usize {
    while tokens.get(i) == Some(&Tok::Punct('#')) {
        i = attribute(tokens, i).0;
    }
    while i < tokens.len() {
        match tokens[i] {
            Tok::Punct(';') => return i + 1,
            Tok::Punct('{') => return matching(tokens, i),
            Tok::Punct('(' | '[') => i = matching(tokens, i),
            _ => i += 1,
        }
    }
    i
}

/// Whether the `use` at `i` has a visibility (`pub`, `pub(crate)`, ...).
fn is_public(tokens: &[Tok], i: usize) -> bool {
    match i.checked_sub(1).map(|j| &tokens[j]) {
        Some(Tok::Ident(p)) => p == "pub",
        Some(Tok::Punct(')')) => {
            // Walk back to the `(` and look before it.
            let mut depth = 0usize;
            let mut j = i - 1;
            loop {
                match tokens[j] {
                    Tok::Punct(')') => depth += 1,
                    Tok::Punct('(') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                if j == 0 {
                    return false;
                }
                j -= 1;
            }
            j > 0 && tokens[j - 1] == Tok::Ident("pub".into())
        }
        _ => false,
    }
}

/// Reads a use tree from `i` (after `use`, or inside braces) into
/// `(full path, name it brings into scope)` leaves; a glob brings no name.
/// Returns the index after the tree (after the `;` at the top level).
fn use_tree(
    tokens: &[Tok],
    mut i: usize,
    prefix: &mut Vec<String>,
    leaves: &mut Vec<(Vec<String>, Option<String>)>,
) -> usize {
    let depth_at_start = prefix.len();
    if tokens.get(i) == Some(&Tok::PathSep) {
        // `use ::extern_crate::...`: another crate.
        prefix.push("::".into());
        i += 1;
    }
    loop {
        match tokens.get(i) {
            Some(Tok::Ident(s)) => {
                prefix.push(s.clone());
                i += 1;
                if tokens.get(i) == Some(&Tok::PathSep) {
                    i += 1;
                    continue;
                }
                let mut name = prefix.last().cloned();
                if name.as_deref() == Some("self") {
                    // `use a::b::{self}` names `b`.
                    prefix.pop();
                    name = prefix.last().cloned();
                }
                if tokens.get(i) == Some(&Tok::Ident("as".into())) {
                    name = match tokens.get(i + 1) {
                        Some(Tok::Ident(alias)) if alias != "_" => Some(alias.clone()),
                        _ => None,
                    };
                    i += 2;
                }
                if prefix.first().is_some_and(|f| f != "::") {
                    leaves.push((prefix.clone(), name));
                }
                break;
            }
            Some(Tok::Punct('*')) => {
                if prefix.first().is_some_and(|f| f != "::") {
                    leaves.push((prefix.clone(), None));
                }
                i += 1;
                break;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match tokens.get(i) {
                        Some(Tok::Punct('}')) => {
                            i += 1;
                            break;
                        }
                        Some(Tok::Punct(',')) => i += 1,
                        None => break,
                        Some(_) => {
                            let mut inner = prefix.clone();
                            i = use_tree(tokens, i, &mut inner, leaves);
                        }
                    }
                }
                break;
            }
            _ => break,
        }
    }
    prefix.truncate(depth_at_start);
    if depth_at_start == 0 && tokens.get(i) == Some(&Tok::Punct(';')) {
        i += 1;
    }
    i
}

/// The tokens the scan needs: identifiers (keywords included), `::`, and
/// single punctuation characters. Literals and comments are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

fn tokenize(text: &str) -> Vec<Tok> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0usize;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(&c, i);
        } else if ch == '\'' {
            // A character literal ('a', '\n', '\'', '\u{..}') or a lifetime ('a).
            if next == Some('\\') || c.get(i + 2) == Some(&'\'') {
                i = skip_char(&c, i);
            } else {
                i += 1;
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let raw_string_prefix = matches!(word.as_str(), "r" | "br" | "cr");
            let string_prefix = matches!(word.as_str(), "b" | "c");
            match c.get(i) {
                Some('"') if raw_string_prefix || string_prefix => i = skip_string(&c, i),
                Some('#') if raw_string_prefix && matches!(c.get(i + 1), Some('#' | '"')) => {
                    i = skip_raw_string(&c, i);
                }
                Some('\'') if word == "b" => i = skip_char(&c, i),
                _ => out.push(Tok::Ident(word)),
            }
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
        } else if ch == ':' && next == Some(':') {
            out.push(Tok::PathSep);
            i += 2;
        } else {
            out.push(Tok::Punct(ch));
            i += 1;
        }
    }
    out
}

/// The index after the character or byte literal whose `'` is at `i`.
fn skip_char(c: &[char], i: usize) -> usize {
    let mut j = i + 1;
    if c.get(j) == Some(&'\\') {
        j += 2;
    } else {
        j += 1;
    }
    while j < c.len() && c[j] != '\'' {
        j += 1;
    }
    j + 1
}

/// The index after the string literal whose `"` is at `i`.
fn skip_string(c: &[char], mut i: usize) -> usize {
    i += 1;
    while i < c.len() {
        match c[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// The index after the raw string whose first `#` (or `"`) is at `i`.
fn skip_raw_string(c: &[char], mut i: usize) -> usize {
    let mut hashes = 0;
    while c.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    i += 1;
    while i < c.len() {
        if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The workspace crates the check covers, relative to the workspace root.
    const CRATES: [&str; 3] = ["provider/core", "preflight", "provider"];

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the system-test crate lives one folder below the workspace root")
            .to_path_buf()
    }

    /// Reads a crate written as `(path, text)` files into a temporary `src/`.
    fn synthetic(files: &[(&str, &str)]) -> (tempfile::TempDir, ModuleGraph) {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let graph = read_target(dir.path(), Path::new("lib.rs")).unwrap();
        (dir, graph)
    }

    fn arrows(g: &ModuleGraph) -> Vec<String> {
        g.edges
            .iter()
            .flat_map(|(from, tos)| {
                tos.keys()
                    .map(move |to| format!("{} -> {}", from.display(), to.display()))
            })
            .collect()
    }

    #[test]
    fn workspace_crates_have_no_import_cycles() {
        let root = workspace();
        let mut failures = Vec::new();
        for name in CRATES {
            let graphs = read_crate(&root.join(name).join("src")).unwrap();
            assert!(!graphs.is_empty(), "{name}/src has no lib.rs or main.rs");
            for g in graphs {
                assert!(
                    g.files.len() > 1 || g.root == Path::new("main.rs"),
                    "{name}: no modules read"
                );
                for cycle in g.cycles() {
                    failures.push(format!("{name}/src ({}): {cycle}", g.root.display()));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "import cycles (files that import each other in a loop):\n{}",
            failures.join("\n")
        );
    }

    #[test]
    fn a_two_file_cycle_through_crate_and_super_paths_is_found() {
        let (_dir, g) = synthetic(&[
            ("lib.rs", "pub mod a;\npub mod b;\n"),
            ("a.rs", "use crate::b::Thing;\npub fn f() -> Thing { Thing }\n"),
            ("b.rs", "pub struct Thing;\npub fn g() { super::a::f(); }\n"),
        ]);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 1, "{cycles:?}");
        let c = &cycles[0];
        assert_eq!(c.files, [PathBuf::from("a.rs"), PathBuf::from("b.rs")]);
        assert_eq!(c.shortest.len(), 3);
        let shown = c.to_string();
        assert!(shown.contains("a.rs -> b.rs: crate::b::Thing"), "{shown}");
        assert!(shown.contains("b.rs -> a.rs: super::a::f"), "{shown}");
    }

    #[test]
    fn a_longer_cycle_through_nested_modules_and_a_reexport_is_found() {
        let (_dir, g) = synthetic(&[
            ("lib.rs", "mod x;\nmod y;\nmod z;\n"),
            ("x/mod.rs", "mod inner;\npub use inner::Inner;\n"),
            ("x/inner.rs", "use crate::y::Y;\npub struct Inner(Y);\n"),
            ("y.rs", "pub struct Y;\nfn f() { let _ = crate::z::g(); }\n"),
            (
                "z.rs",
                "use crate::x::Inner; // resolved through the re-export to x/inner.rs\npub fn g() {}\n",
            ),
        ]);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 1, "{:?}", arrows(&g));
        assert_eq!(
            cycles[0].files,
            [
                PathBuf::from("x/inner.rs"),
                PathBuf::from("y.rs"),
                PathBuf::from("z.rs")
            ]
        );
    }

    #[test]
    fn a_facade_test_code_literals_and_other_crates_are_not_arrows() {
        let (_dir, g) = synthetic(&[
            (
                "lib.rs",
                "pub mod m;\npub use m::Item; // the face of the crate\n\
                 /* crate::m::Item in a comment */\n\
                 pub const S: &str = \"crate::m::Item\";\n\
                 pub const R: &str = r#\"super::m\"#;\n\
                 fn lifetimes<'a>(x: &'a str) -> char { let _ = x; 'c' }\n",
            ),
            (
                "m.rs",
                "use std::collections::BTreeMap;\nuse serde::Serialize;\npub struct Item;\n\
                 #[cfg(test)]\nmod tests { use crate::S; }\n\
                 #[cfg(test)]\nuse crate::R;\n",
            ),
        ]);
        assert!(arrows(&g).is_empty(), "{:?}", arrows(&g));
        assert!(g.cycles().is_empty());
    }

    #[test]
    fn a_parent_that_uses_its_child_privately_while_the_child_uses_it_is_a_cycle() {
        let (_dir, g) = synthetic(&[
            ("lib.rs", "mod p;\n"),
            (
                "p/mod.rs",
                "mod c;\nuse self::c::helper;\npub struct T;\nfn f() { helper(); }\n",
            ),
            ("p/c.rs", "use super::T;\npub fn helper() -> Option<T> { None }\n"),
        ]);
        assert_eq!(arrows(&g), ["p/c.rs -> p/mod.rs", "p/mod.rs -> p/c.rs"]);
        assert_eq!(g.cycles().len(), 1);
    }

    #[test]
    fn an_import_used_by_a_child_through_super_points_at_the_defining_file() {
        let (_dir, g) = synthetic(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            ("a.rs", "pub struct A;\n"),
            ("b/mod.rs", "use crate::a::A;\nmod c;\nfn f(_: A) {}\n"),
            ("b/c.rs", "use super::{A, self as parent};\nfn g(_: A) {}\n"),
        ]);
        assert_eq!(arrows(&g), ["b/c.rs -> a.rs", "b/c.rs -> b/mod.rs", "b/mod.rs -> a.rs"]);
    }
}
