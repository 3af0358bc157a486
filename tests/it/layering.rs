//! The architecture as a test (docs/ARCHITECTURE.md): no import circle among the gateway's
//! source files, and on the request path no module imports one above it (server → proxy →
//! stages → stack; the upstream side below the proxy).
//!
//! Imports are read from the sources: `use` trees and `crate::…`/`super::…` paths in code, each
//! resolved to the file that defines the item — through `pub use` re-exports, so `super::Check`
//! in `stage/access.rs` points at `stage/check.rs`, not at `stage/mod.rs`. Test-only files and
//! `#[cfg(test)]` modules are left out: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// A source file: its module path and its code with comments and strings blanked.
struct File {
    module: Vec<String>,
    code: String,
}

fn load() -> BTreeMap<String, File> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    walk(&root, &root, &mut files);
    files
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, File>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(root, &path, out);
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        if !rel.ends_with(".rs") || rel == "main.rs" || rel.ends_with("tests.rs") {
            continue;
        }
        let mut module: Vec<String> = rel
            .trim_end_matches(".rs")
            .split('/')
            .map(String::from)
            .collect();
        if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
            module.pop();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        out.insert(
            rel,
            File {
                module,
                code: strip_tests(&blank(&text)),
            },
        );
    }
}

/// The code with comments, string and char literals replaced by spaces.
fn blank(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        let skip = if rest.starts_with("//") {
            rest.find('\n').unwrap_or(rest.len())
        } else if rest.starts_with("/*") {
            rest.find("*/").map_or(rest.len(), |e| e + 2)
        } else if let Some(raw) = rest.strip_prefix("r#\"") {
            raw.find("\"#").map_or(rest.len(), |e| e + 5)
        } else if let Some(raw) = rest
            .strip_prefix("r\"")
            .filter(|_| i == 0 || !is_ident(b[i - 1]))
        {
            raw.find('"').map_or(rest.len(), |e| e + 3)
        } else if rest.starts_with('"') {
            let mut j = 1;
            while j < b.len() - i && b[i + j] != b'"' {
                j += if b[i + j] == b'\\' { 2 } else { 1 };
            }
            j + 1
        } else if rest.starts_with("'\\") || (rest.len() > 2 && b[i] == b'\'' && b[i + 2] == b'\'')
        {
            rest[1..].find('\'').map_or(1, |e| e + 2)
        } else {
            0
        };
        if skip == 0 {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        } else {
            let end = (i + skip).min(b.len());
            out.extend(
                text[i..end]
                    .chars()
                    .map(|c| if c == '\n' { '\n' } else { ' ' }),
            );
            i = end;
        }
    }
    out
}

/// The code without `#[cfg(test)]` items (a test module's imports are the tests' business).
fn strip_tests(code: &str) -> String {
    let mut out = code.to_string();
    while let Some(at) = out.find("#[cfg(test)]") {
        let after = at + "#[cfg(test)]".len();
        let end = match (out[after..].find('{'), out[after..].find(';')) {
            (Some(brace), semi) if semi.is_none_or(|s| brace < s) => {
                let mut depth = 0;
                let mut end = out.len();
                for (k, c) in out[after + brace..].char_indices() {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    if depth == 0 {
                        end = after + brace + k + 1;
                        break;
                    }
                }
                end
            }
            (_, Some(semi)) => after + semi + 1,
            _ => out.len(),
        };
        out.replace_range(at..end, "");
    }
    out
}

/// A `use` tree without whitespace, except one space on each side of `as`.
fn tree_of(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out = String::new();
    for (i, w) in words.iter().enumerate() {
        let aliased = *w == "as" || words.get(i.wrapping_sub(1)) == Some(&"as");
        if aliased {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// The child modules `code` declares (`mod name;` or `mod name {`).
fn children(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = find_word(rest, "mod") {
        let tail = rest[at + 3..].trim_start();
        let name: String = tail
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
        rest = &rest[at + 3..];
    }
    out
}

/// Every path a file names: `use` trees expanded, and `crate::`/`super::`/`self::` paths and
/// paths through the file's own child modules (`conn::dial` where the file declares `mod conn`).
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = find_word(rest, "use") {
        let tail = &rest[at + 3..];
        let end = tail.find(';').unwrap_or(tail.len());
        expand("", &tree_of(&tail[..end]), &mut out);
        rest = &tail[end..];
    }
    let kids: Vec<String> = children(code).iter().map(|c| format!("{c}::")).collect();
    let starts = ["crate::", "super::", "self::"].map(String::from);
    for start in starts.iter().chain(&kids) {
        let mut from = 0;
        while let Some(k) = code[from..].find(start) {
            let at = from + k;
            from = at + start.len();
            let before = code[..at].trim_end();
            if at > 0 && (is_ident(code.as_bytes()[at - 1]) || before.ends_with("::")) {
                continue;
            }
            let len = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(code.len() - at);
            // `super::{a, b}` is a use tree, read above; its head alone names nothing.
            if code[at + len..].starts_with('{') {
                continue;
            }
            let path = code[at..at + len].trim_end_matches(':');
            if kids.contains(start) {
                out.push(format!("self::{path}"));
            } else {
                out.push(path.to_string());
            }
        }
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn find_word(s: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(k) = s[from..].find(word) {
        let at = from + k;
        let before = at == 0 || !is_ident(s.as_bytes()[at - 1]);
        let after = s
            .as_bytes()
            .get(at + word.len())
            .is_none_or(|&b| !is_ident(b));
        if before && after {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e` (aliases dropped).
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.split(" as ").next().unwrap_or(tree);
    if let Some(open) = tree.find('{') {
        let head = format!("{prefix}{}", &tree[..open]);
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut depth = 0;
        let mut part = String::new();
        for c in inner.chars().chain([',']) {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    if !part.is_empty() {
                        expand(&head, &part, out);
                    }
                    part.clear();
                    continue;
                }
                _ => {}
            }
            part.push(c);
        }
    } else {
        out.push(format!("{prefix}{tree}"));
    }
}

struct Index {
    /// Module path → file.
    modules: HashMap<Vec<String>, String>,
    /// (file, re-exported name) → the path it re-exports, absolute.
    reexports: HashMap<(String, String), Vec<String>>,
}

/// A path as segments from the crate root, or `None` for an outside crate.
fn absolute(module: &[String], kids: &[String], path: &str) -> Option<Vec<String>> {
    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<String> = match segs.first().copied() {
        Some("crate") => Vec::new(),
        Some("super") | Some("self") => module.to_vec(),
        Some(first) if kids.iter().any(|k| k == first) => module.to_vec(),
        _ => return None,
    };
    if segs[0] == "crate" {
        segs.remove(0);
    }
    while let Some(&s) = segs.first() {
        match s {
            "super" => {
                base.pop();
            }
            "self" => {}
            _ => break,
        }
        segs.remove(0);
    }
    base.extend(segs.iter().map(|s| s.to_string()));
    Some(base)
}

impl Index {
    fn new(files: &BTreeMap<String, File>) -> Index {
        let modules = files
            .iter()
            .map(|(name, f)| (f.module.clone(), name.clone()))
            .collect();
        let mut reexports = HashMap::new();
        for (name, f) in files {
            let kids = children(&f.code);
            let mut rest = f.code.as_str();
            while let Some(at) = find_word(rest, "use") {
                let before = rest[..at].trim_end();
                let tail = &rest[at + 3..];
                let end = tail.find(';').unwrap_or(tail.len());
                rest = &tail[end..];
                // `pub use`, `pub(crate) use`, `pub(super) use`, `pub(in …) use`.
                let public = before.ends_with("pub")
                    || before
                        .rfind("pub(")
                        .is_some_and(|p| !before[p..].contains(['\n', ';']));
                if !public {
                    continue;
                }
                let mut expanded = Vec::new();
                expand("", &tree_of(&tail[..end]), &mut expanded);
                for p in expanded {
                    let rel = if p.starts_with("crate") || p.starts_with("super") {
                        p.clone()
                    } else {
                        format!("self::{p}")
                    };
                    if let Some(abs) = absolute(&f.module, &kids, &rel) {
                        let item = abs.last().cloned().unwrap_or_default();
                        reexports.insert((name.clone(), item), abs);
                    }
                }
            }
        }
        Index { modules, reexports }
    }

    /// The file defining what `path` (from the crate root) names.
    fn resolve(&self, path: &[String], depth: usize) -> Option<String> {
        let mut k = path.len();
        while k > 0 && !self.modules.contains_key(&path[..k]) {
            k -= 1;
        }
        let file = self.modules.get(&path[..k])?.clone();
        match path.get(k) {
            Some(item) if depth < 8 => match self.reexports.get(&(file.clone(), item.clone())) {
                Some(target) if target != path => {
                    let mut next = target.clone();
                    next.extend(path[k + 1..].iter().cloned());
                    self.resolve(&next, depth + 1).or(Some(file))
                }
                _ => Some(file),
            },
            _ => Some(file),
        }
    }
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = load();
    let index = Index::new(&files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, f) in &files {
        let kids = children(&f.code);
        let mut to = BTreeSet::new();
        for p in paths(&f.code) {
            let Some(abs) = absolute(&f.module, &kids, &p) else {
                continue;
            };
            if let Some(target) = index.resolve(&abs, 0) {
                if target != *name && target != "lib.rs" {
                    to.insert(target);
                }
            }
        }
        edges.insert(name.clone(), to);
    }
    edges
}

/// Strongly connected components with more than one file (Tarjan).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        w.on.insert(v);
        for u in w.edges.get(v).into_iter().flatten() {
            if !w.index.contains_key(u.as_str()) {
                visit(w, u);
                let l = w.low[v].min(w.low[u.as_str()]);
                w.low.insert(v, l);
            } else if w.on.contains(u.as_str()) {
                let l = w.low[v].min(w.index[u.as_str()]);
                w.low.insert(v, l);
            }
        }
        if w.low[v] == w.index[v] {
            let mut scc = Vec::new();
            while let Some(x) = w.stack.pop() {
                w.on.remove(x);
                scc.push(x.to_string());
                if x == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                w.found.push(scc);
            }
        }
    }
    let mut w = Walk {
        edges,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !w.index.contains_key(v.as_str()) {
            visit(&mut w, v);
        }
    }
    w.found
}

/// No import circle among source files — a folder's `mod.rs` and its own files included (what
/// a `mod.rs` shares with its files lives in a file of its own, as `pool/settings.rs` does).
#[test]
fn no_source_file_is_part_of_an_import_circle() {
    let edges = graph();
    assert!(edges.len() > 50, "read only {} files", edges.len());
    let found = circles(&edges);
    assert!(found.is_empty(), "import circles: {found:#?}");
}

/// At every folder, its entries — each file, and each sub-folder taken whole; not the folder's
/// own `mod.rs` — import one another without a circle (`balance/` and `endpoint.rs` of `upstream/` may not use each
/// other, even through different files).
#[test]
fn no_module_is_part_of_an_import_circle() {
    let edges = graph();
    let mut found = Vec::new();
    let folders: BTreeSet<String> = edges
        .keys()
        .map(|f| {
            f.rsplit_once('/')
                .map_or(String::new(), |(d, _)| d.to_string())
        })
        .collect();
    for folder in folders {
        let prefix = if folder.is_empty() {
            String::new()
        } else {
            format!("{folder}/")
        };
        // The entry of `folder` a file belongs to: its file name, or its sub-folder's name.
        // The folder's `mod.rs` is the module itself, not one of its entries.
        let entry = |file: &str| -> Option<String> {
            let rest = file.strip_prefix(&prefix)?;
            let name = rest
                .split('/')
                .next()
                .unwrap_or(rest)
                .trim_end_matches(".rs");
            (name != "mod").then(|| name.to_string())
        };
        let mut level: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, tos) in &edges {
            let Some(a) = entry(from) else { continue };
            for to in tos {
                match entry(to) {
                    Some(b) if b != a => {
                        level.entry(a.clone()).or_default().insert(b);
                    }
                    _ => {}
                }
            }
        }
        for circle in circles(&level) {
            found.push(format!("{prefix}{{{}}}", circle.join(", ")));
        }
    }
    assert!(found.is_empty(), "module circles: {found:#?}");
}

/// On the request path (server → proxy → stages → stack, the upstream side below the proxy),
/// what each module may not import: nothing above it, and across — the forwarder names no
/// stage, a stage no forwarder or upstream, `stack` nothing of the path at all.
const FORBIDDEN: [(&str, &[&str]); 6] = [
    ("proxy", &["server", "stage", "plugin", "gateway", "admin"]),
    (
        "stage",
        &["server", "proxy", "upstream", "route", "gateway", "admin"],
    ),
    (
        "plugin",
        &[
            "server", "proxy", "stage", "upstream", "route", "gateway", "admin",
        ],
    ),
    (
        "route",
        &[
            "server", "proxy", "stage", "plugin", "stack", "gateway", "admin",
        ],
    ),
    (
        "upstream",
        &[
            "server", "proxy", "stage", "plugin", "stack", "route", "gateway", "admin",
        ],
    ),
    (
        "stack",
        &[
            "server", "proxy", "stage", "plugin", "upstream", "route", "gateway", "admin",
        ],
    ),
];

#[test]
fn the_request_path_imports_only_downwards() {
    let top = |file: &str| file.split(['/', '.']).next().unwrap_or("").to_string();
    let mut upward = Vec::new();
    for (from, tos) in graph() {
        let Some((_, banned)) = FORBIDDEN.iter().find(|(m, _)| *m == top(&from)) else {
            continue;
        };
        for to in tos {
            if banned.contains(&top(&to).as_str()) {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against the request path: {upward:#?}"
    );
}

#[test]
fn the_import_reader_sees_what_it_should() {
    // A guard on the reader itself, so the tests above cannot pass by reading nothing.
    let edges = graph();
    let has = |from: &str, to: &str| edges.get(from).is_some_and(|t| t.contains(to));
    assert!(
        has("stage/access.rs", "stage/check.rs"),
        "{:?}",
        edges.get("stage/access.rs")
    );
    assert!(has("proxy/call.rs", "upstream/endpoint.rs"));
    assert!(has("gateway/build.rs", "proxy/forward.rs"));
    assert!(!has("stack/mod.rs", "proxy/mod.rs"));
    // A path through a child module without `self::`, and a `pub(super) use`.
    assert!(has("upstream/pool/mod.rs", "upstream/pool/conn.rs"));
    assert!(has("gateway/reload.rs", "gateway/live.rs"));
}
