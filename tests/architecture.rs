//! The invariants of ARCHITECTURE.md ("Invariants"), checked by reading `src/` with a Rust parser.
//!
//! The graph: one node per top-level module of the library (`auth`, `meta`, …), and one per
//! submodule of the modules in [`SPLIT`] (`farm::worker`, …). An edge `a → b` is any path in `a`
//! that names an item of `b`: `use` trees, paths in code and types, and `crate::…`/`super::…`
//! paths inside macro invocations. `#[cfg(test)]` items are left out (a unit test may wire modules
//! together), and so is a submodule's use of its own parent (`super::Farm` in `farm::worker`):
//! the parent contains it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// Modules whose submodules are nodes of their own.
const SPLIT: &[&str] = &["farm"];

/// Crates that speak HTTP: only the edge modules ([`HTTP_EDGE`]) may name them.
const HTTP_CRATES: &[&str] = &[
    "axum",
    "http",
    "http_body_util",
    "hyper",
    "hyper_util",
    "reqwest",
    "tower",
    "tower_http",
];

/// The modules at the HTTP edge: the server's HTTP layer, its assembly and accept loop, the
/// `/metrics` exporter, the CLI (an HTTP client of the admin API), `client` (the one outbound HTTP
/// client, shared by the CLI and the compute-node commands), `fetch` (the compute-node side of the
/// `/sif` protocol: ranges, `If-Range`, ETags, `Retry-After`), `builder` (the build host's side of
/// the `/builder/v1` protocol, on `client`), `notifications` (POSTs the build-outcome webhooks
/// with reqwest) and the fuzz entry points of the HTTP parsers. Everything else is "below http".
const HTTP_EDGE: &[&str] = &[
    "builder",
    "cli",
    "client",
    "fetch",
    "fuzzing",
    "http",
    "listener",
    "notifications",
    "server",
    "telemetry",
    // The web UI: HTML pages and their forms, cookies and security headers.
    "ui",
];

/// One reference from a module to a path, and where it stands.
#[derive(Debug, Clone)]
struct Ref {
    /// The module the reference is written in (`["farm", "worker"]`).
    from: Vec<String>,
    /// The path, absolute (`["meta", "Db"]`) when it starts in this crate, else as written
    /// (`["rusqlite", "Connection"]`).
    path: Vec<String>,
    /// Whether `path` starts in this crate.
    internal: bool,
    at: String,
}

struct Crate {
    /// Every module path of the library (files and non-test inline modules).
    modules: BTreeSet<Vec<String>>,
    refs: Vec<Ref>,
    /// Method calls: (module, method name, place).
    calls: Vec<(Vec<String>, String, String)>,
}

/// The methods of a SQLite connection or transaction that run SQL.
const SQL_METHODS: &[&str] = &[
    "execute",
    "execute_batch",
    "prepare",
    "prepare_cached",
    "query_row",
    "pragma_update",
    "pragma_query_value",
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `src/farm/worker.rs` → `farm::worker`; `src/auth/mod.rs` → `auth`; `src/lib.rs` → the root.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Ident>()
                .is_ok_and(|ident| ident == "test")
    })
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    use syn::Item::*;
    match item {
        Const(i) => &i.attrs,
        Enum(i) => &i.attrs,
        ExternCrate(i) => &i.attrs,
        Fn(i) => &i.attrs,
        ForeignMod(i) => &i.attrs,
        Impl(i) => &i.attrs,
        Macro(i) => &i.attrs,
        Mod(i) => &i.attrs,
        Static(i) => &i.attrs,
        Struct(i) => &i.attrs,
        Trait(i) => &i.attrs,
        TraitAlias(i) => &i.attrs,
        Type(i) => &i.attrs,
        Union(i) => &i.attrs,
        Use(i) => &i.attrs,
        _ => &[],
    }
}

/// Collects the paths of one file, skipping `#[cfg(test)]` items.
struct Collector<'a> {
    file: &'a str,
    /// The module being read (grows inside inline `mod x { … }`).
    module: Vec<String>,
    /// Paths as written, with the module they are written in.
    raw: Vec<(Vec<String>, Vec<String>, String)>,
    inline_modules: Vec<Vec<String>>,
    calls: Vec<(Vec<String>, String, String)>,
}

impl Collector<'_> {
    fn push(&mut self, segments: Vec<String>, span: proc_macro2::Span) {
        if segments.is_empty() {
            return;
        }
        let at = format!("{}:{}", self.file, span.start().line);
        self.raw.push((self.module.clone(), segments, at));
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut path = prefix.clone();
                if n.ident != "self" {
                    path.push(n.ident.to_string());
                }
                self.push(path, n.ident.span());
            }
            syn::UseTree::Rename(r) => {
                let mut path = prefix.clone();
                if r.ident != "self" {
                    path.push(r.ident.to_string());
                }
                self.push(path, r.ident.span());
            }
            syn::UseTree::Glob(g) => self.push(prefix.clone(), g.star_token.span),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    /// `crate::a::b`, `super::x` and `name::y` runs inside a macro's tokens (`format!`, `json!`, …).
    fn tokens(&mut self, tokens: TokenStream) {
        let flat = flatten(tokens);
        let mut i = 0;
        while i < flat.len() {
            let TokenTree::Ident(first) = &flat[i] else {
                i += 1;
                continue;
            };
            let preceded_by_colons =
                i >= 1 && matches!(&flat[i - 1], TokenTree::Punct(p) if p.as_char() == ':');
            let mut segments = vec![first.to_string()];
            let mut j = i + 1;
            while is_colons(&flat, j) {
                match flat.get(j + 2) {
                    Some(TokenTree::Ident(next)) => {
                        segments.push(next.to_string());
                        j += 3;
                    }
                    _ => break,
                }
            }
            if segments.len() > 1 && !preceded_by_colons {
                self.push(segments, first.span());
            }
            i = j.max(i + 1);
        }
    }
}

fn flatten(tokens: TokenStream) -> Vec<TokenTree> {
    let mut out = Vec::new();
    for t in tokens {
        match t {
            TokenTree::Group(g) => out.extend(flatten(g.stream())),
            other => out.push(other),
        }
    }
    out
}

fn is_colons(flat: &[TokenTree], j: usize) -> bool {
    matches!(
        (flat.get(j), flat.get(j + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && b.as_char() == ':'
    )
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if is_cfg_test(item_attrs(item)) {
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.module.push(m.ident.to_string());
        if m.content.is_some() {
            self.inline_modules.push(self.module.clone());
        }
        syn::visit::visit_item_mod(self, m);
        self.module.pop();
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(first) = p.segments.first() {
            if segments.len() > 1 || p.leading_colon.is_some() {
                self.push(segments, first.ident.span());
            }
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        let at = format!("{}:{}", self.file, call.method.span().start().line);
        self.calls
            .push((self.module.clone(), call.method.to_string(), at));
        syn::visit::visit_expr_method_call(self, call);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }
}

fn read_crate() -> Crate {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut modules = BTreeSet::new();
    let mut raw = Vec::new();
    let mut calls = Vec::new();
    for path in files {
        let rel = path.strip_prefix(&src).expect("under src").to_path_buf();
        if rel == Path::new("main.rs") {
            continue; // the binary: a crate of its own that uses the library from outside
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("parse {}: {e}", rel.display()));
        let module = module_of(&rel);
        modules.insert(module.clone());
        let file = format!("src/{}", rel.display());
        let mut c = Collector {
            file: &file,
            module,
            raw: Vec::new(),
            inline_modules: Vec::new(),
            calls: Vec::new(),
        };
        for item in &ast.items {
            c.visit_item(item);
        }
        modules.extend(c.inline_modules);
        raw.extend(c.raw);
        calls.extend(c.calls);
    }
    let refs = raw
        .into_iter()
        .filter_map(|(from, path, at)| resolve(&modules, from, path, at))
        .collect();
    Crate {
        modules,
        refs,
        calls,
    }
}

/// Makes a path absolute: `crate::`, `super::`, `self::` and a first segment naming a child
/// module of `from` start in this crate; anything else is another crate (or a local name, which
/// the `use` that brought it in already recorded).
fn resolve(
    modules: &BTreeSet<Vec<String>>,
    from: Vec<String>,
    path: Vec<String>,
    at: String,
) -> Option<Ref> {
    let mut rest = path.as_slice();
    let mut base = from.clone();
    let internal = match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
            true
        }
        Some("self") => {
            rest = &rest[1..];
            true
        }
        Some("super") => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
            true
        }
        Some(first) => {
            let mut child = from.clone();
            child.push(first.to_owned());
            modules.contains(&child)
        }
        None => return None,
    };
    let path = if internal {
        base.extend(rest.iter().cloned());
        base
    } else {
        path
    };
    Some(Ref {
        from,
        path,
        internal,
        at,
    })
}

/// The graph node of a module path: its top-level module, or `m::sub` for `m` in [`SPLIT`].
fn node(module: &[String]) -> Option<String> {
    let top = module.first()?;
    match module.get(1) {
        Some(sub) if SPLIT.contains(&top.as_str()) => Some(format!("{top}::{sub}")),
        _ => Some(top.clone()),
    }
}

/// The module a path names an item of: its longest prefix that is a module.
fn target_module<'a>(modules: &BTreeSet<Vec<String>>, path: &'a [String]) -> &'a [String] {
    (1..=path.len())
        .rev()
        .map(|n| &path[..n])
        .find(|p| modules.contains(*p))
        .unwrap_or(&[])
}

/// Edges between nodes, each with the first place that makes it.
fn graph(krate: &Crate) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for r in krate.refs.iter().filter(|r| r.internal) {
        let (Some(from), Some(to)) = (node(&r.from), node(target_module(&krate.modules, &r.path)))
        else {
            continue;
        };
        let is_own_parent = from.strip_prefix(&to).is_some_and(|s| s.starts_with("::"));
        if from == to || is_own_parent {
            continue;
        }
        edges
            .entry(from)
            .or_default()
            .entry(to)
            .or_insert_with(|| r.at.clone());
    }
    edges
}

/// Strongly connected components with more than one node (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        edges: &'a BTreeMap<String, BTreeMap<String, String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.edges.get(v).into_iter().flat_map(|m| m.keys()) {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                loop {
                    let w = self.stack.pop().expect("on the stack");
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

/// The shortest cycle through `start` inside `component`, as `a → b → a`.
fn shortest_cycle(
    edges: &BTreeMap<String, BTreeMap<String, String>>,
    component: &[String],
    start: &str,
) -> Vec<String> {
    let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in edges.get(v).into_iter().flat_map(|m| m.keys()) {
            if !component.contains(w) {
                continue;
            }
            if w == start {
                let mut path = vec![start.to_owned()];
                let mut at = v;
                while at != start {
                    path.push(at.to_owned());
                    at = previous[at];
                }
                path.push(start.to_owned());
                let n = path.len();
                path[1..n - 1].reverse();
                return path;
            }
            if !previous.contains_key(w.as_str()) {
                previous.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    vec![start.to_owned()]
}

fn describe_cycles(edges: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<String> {
    let mut out = Vec::new();
    for component in cycles(edges) {
        let mut lines = vec![format!("cycle among {{{}}}:", component.join(", "))];
        let mut seen = BTreeSet::new();
        for start in &component {
            let cycle = shortest_cycle(edges, &component, start);
            let mut key = cycle[..cycle.len() - 1].to_vec();
            key.sort();
            if !seen.insert(key) {
                continue;
            }
            lines.push(format!("  {}", cycle.join(" → ")));
            for pair in cycle.windows(2) {
                lines.push(format!(
                    "    {} → {} at {}",
                    pair[0], pair[1], edges[&pair[0]][&pair[1]]
                ));
            }
        }
        out.push(lines.join("\n"));
    }
    out
}

#[test]
fn no_import_cycles_between_modules() {
    let krate = read_crate();
    let edges = graph(&krate);
    let found = describe_cycles(&edges);
    assert!(
        found.is_empty(),
        "import cycles in src/ (ARCHITECTURE.md: each arrow points one way):\n{}",
        found.join("\n")
    );
}

/// Places where modules outside `allowed` name the crate `name`.
fn uses_of_crate(krate: &Crate, names: &[&str], allowed: &[&str]) -> Vec<String> {
    let mut places: BTreeSet<String> = BTreeSet::new();
    for r in krate.refs.iter().filter(|r| !r.internal) {
        let (Some(top), Some(first)) = (r.from.first(), r.path.first()) else {
            continue;
        };
        if names.contains(&first.as_str()) && !allowed.contains(&top.as_str()) {
            places.insert(format!("{} names {}", r.at, r.path.join("::")));
        }
    }
    places.into_iter().collect()
}

/// Fails with `what` and every place found, one a line.
fn assert_none(what: &str, found: Vec<String>) {
    assert!(found.is_empty(), "{what}:\n{}", found.join("\n"));
}

#[test]
fn nothing_but_meta_knows_sql() {
    let krate = read_crate();
    let found = uses_of_crate(&krate, &["rusqlite"], &["meta"]);
    assert_none("SQL outside src/meta (give meta a function instead)", found);
}

#[test]
fn nothing_but_meta_runs_sql() {
    // Code outside meta may hold a `meta::Conn`/`meta::Tx` to run several meta functions in one
    // transaction, but only hands it on: it never calls the methods that run SQL.
    let krate = read_crate();
    let found: Vec<String> = krate
        .calls
        .iter()
        .filter(|(module, method, _)| {
            module.first().is_some_and(|m| m != "meta") && SQL_METHODS.contains(&method.as_str())
        })
        .map(|(_, method, at)| format!("{at} calls .{method}()"))
        .collect();
    assert_none("SQL run outside src/meta", found);
}

#[test]
fn nothing_below_http_knows_http() {
    let krate = read_crate();
    let mut found = uses_of_crate(&krate, HTTP_CRATES, HTTP_EDGE);
    for r in krate.refs.iter().filter(|r| r.internal) {
        let (Some(from), Some(to)) = (r.from.first(), r.path.first()) else {
            continue;
        };
        let below = !HTTP_EDGE.contains(&from.as_str());
        if below && ["http", "server", "listener", "cli"].contains(&to.as_str()) {
            found.push(format!("{} names crate::{}", r.at, r.path.join("::")));
        }
    }
    assert_none(
        &format!("HTTP below the HTTP layer (only {HTTP_EDGE:?} may speak it)"),
        found,
    );
}

#[test]
fn config_is_plain_data() {
    // config.rs holds what the TOML file says; each module builds its own types from it, so
    // config names no other module of the crate.
    let krate = read_crate();
    let found: BTreeSet<String> = krate
        .refs
        .iter()
        .filter(|r| r.internal && r.from.first().is_some_and(|m| m == "config"))
        .filter(|r| r.path.first().is_some_and(|m| m != "config"))
        .map(|r| format!("{} names crate::{}", r.at, r.path.join("::")))
        .collect();
    assert_none(
        "config depends on other modules",
        found.into_iter().collect(),
    );
}

/// Internal references from modules whose top level is `from` into `to` that `bad` picks out.
fn refs_into(
    krate: &Crate,
    from: &str,
    to: &[&str],
    bad: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let found: BTreeSet<String> = krate
        .refs
        .iter()
        .filter(|r| r.internal && r.from.first().is_some_and(|m| m == from))
        .filter(|r| r.path.len() >= to.len() && r.path[..to.len()] == *to)
        .filter(|r| bad(&r.path))
        .map(|r| format!("{} names crate::{}", r.at, r.path.join("::")))
        .collect();
    found.into_iter().collect()
}

#[test]
fn handlers_call_no_meta_function() {
    // The HTTP layer translates; the work is a plain-type service's (registry, farm, quota,
    // lifecycle, auth). A handler may name meta's plain types (`JobState`) and the shared clock
    // (`meta::now`, no query), never another function of it (nor the module, which is how one
    // would reach them).
    let krate = read_crate();
    let found = refs_into(&krate, "http", &["meta"], |path| {
        let function = path
            .last()
            .and_then(|s| s.chars().next())
            .is_some_and(char::is_lowercase);
        function && path != ["meta", "now"]
    });
    assert_none("meta called from the HTTP layer", found);
}

#[test]
fn the_blob_store_is_reached_through_its_interface() {
    // Callers hold a `storage::BlobStore` (the `Storage` trait), never the filesystem store,
    // so none can reach for a blob path and a second backend could sit beside it.
    let krate = read_crate();
    let mut found = Vec::new();
    for top in krate.modules.iter().filter_map(|m| m.first()) {
        if top != "storage" {
            found.extend(refs_into(&krate, top, &["storage", "fs"], |_| true));
        }
    }
    found.sort();
    found.dedup();
    assert_none("the filesystem store named outside src/storage", found);
}

/// The reader itself: a known graph with one cycle is reported as exactly that cycle, and
/// every kind of path the collector must see is seen.
#[test]
fn the_graph_reader_sees_what_it_must() {
    let text = r#"
        use crate::a::{self, b::C};
        use super::sibling::Thing;
        fn f() { crate::d::g(); let _ = format!("{}", crate::e::h()); }
        #[cfg(test)]
        mod tests { use crate::hidden::X; }
    "#;
    let ast = syn::parse_file(text).unwrap();
    let mut c = Collector {
        file: "x.rs",
        module: vec!["m".into(), "n".into()],
        raw: Vec::new(),
        inline_modules: Vec::new(),
        calls: Vec::new(),
    };
    for item in &ast.items {
        c.visit_item(item);
    }
    let modules: BTreeSet<Vec<String>> = [
        vec!["a"],
        vec!["a", "b"],
        vec!["m"],
        vec!["m", "sibling"],
        vec!["d"],
        vec!["e"],
        vec!["hidden"],
    ]
    .into_iter()
    .map(|m| m.into_iter().map(String::from).collect())
    .collect();
    let targets: BTreeSet<String> = c
        .raw
        .into_iter()
        .filter_map(|(from, path, at)| resolve(&modules, from, path, at))
        .map(|r| target_module(&modules, &r.path).join("::"))
        .collect();
    let expected: BTreeSet<String> = ["a", "a::b", "m::sibling", "d", "e"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(targets, expected);

    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (a, b) in [("x", "y"), ("y", "z"), ("z", "x"), ("z", "w")] {
        edges
            .entry(a.into())
            .or_default()
            .insert(b.into(), format!("{a}.rs:1"));
    }
    let found = describe_cycles(&edges);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("x → y → z → x"), "{}", found[0]);
}
