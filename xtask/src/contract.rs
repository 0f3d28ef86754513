//! `cargo xtask contract`: the router and `docs/openapi.yaml` describe the
//! same routes.
//!
//! Both sides are read as text, without building the service:
//!
//! - the router: every `.route("PATH", get(..).post(..))` call of
//!   `apps/runtime/src/server.rs`, read with a small Rust tokenizer so that
//!   comments and strings cannot fool it. Anything the check could not see
//!   through (`.nest`, `.merge`, a path that is not a string literal, a method
//!   router it does not know) fails the check rather than being skipped;
//! - the document: the keys under `paths:` and the HTTP-method keys under each
//!   path, read by indentation (the document's layout rules are written at its
//!   top).
//!
//! axum 0.8 writes path parameters as `{name}`, like OpenAPI, so the paths
//! compare as they are.

use anyhow::{Context, bail};
use std::collections::BTreeSet;
use std::fmt;

/// The router's source, relative to the workspace root.
const ROUTER_FILE: &str = "apps/runtime/src/server.rs";
/// The OpenAPI document, relative to the workspace root.
const OPENAPI_FILE: &str = "docs/openapi.yaml";

/// The HTTP methods, as axum's method-router functions and OpenAPI keys name
/// them.
const METHODS: [&str; 8] = [
    "get", "post", "put", "delete", "patch", "head", "options", "trace",
];

/// Router calls that add routes this check cannot see.
const OPAQUE_ROUTER_CALLS: [&str; 4] = ["nest", "merge", "nest_service", "route_service"];

/// One operation: an HTTP method on a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    /// Upper-case method, e.g. `GET`.
    pub method: String,
    /// The path with `{param}` placeholders.
    pub path: String,
}

impl Route {
    fn new(method: &str, path: &str) -> Self {
        Route {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// `cargo xtask contract`: prints `contract ok: N routes` or fails listing
/// every route found on one side only.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    if !args.is_empty() {
        bail!("usage: cargo xtask contract");
    }
    let root = crate::workspace_root();
    let read = |file: &str| {
        std::fs::read_to_string(root.join(file)).with_context(|| format!("reading {file}"))
    };
    let served = router_routes(&read(ROUTER_FILE)?).context(ROUTER_FILE)?;
    let documented = openapi_routes(&read(OPENAPI_FILE)?).context(OPENAPI_FILE)?;
    let mismatches = mismatches(&served, &documented);
    if !mismatches.is_empty() {
        bail!(
            "the router and the OpenAPI document disagree:\n{}",
            mismatches.join("\n")
        );
    }
    println!("contract ok: {} routes", served.len());
    Ok(())
}

/// One line per route found on one side only; empty when both agree.
pub fn mismatches(served: &BTreeSet<Route>, documented: &BTreeSet<Route>) -> Vec<String> {
    let undocumented = served
        .difference(documented)
        .map(|route| format!("  {route}: served by {ROUTER_FILE}, missing from {OPENAPI_FILE}"));
    let unserved = documented
        .difference(served)
        .map(|route| format!("  {route}: in {OPENAPI_FILE}, not served by {ROUTER_FILE}"));
    undocumented.chain(unserved).collect()
}

/// A token of Rust source, as far as the route extraction needs one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An identifier or keyword.
    Ident(String),
    /// The contents of a string literal (escapes kept as written).
    Str(String),
    /// Any other character that is not whitespace.
    Punct(char),
}

/// Splits Rust source into tokens, dropping whitespace, comments, character
/// literals and lifetimes' quotes.
fn tokenize(source: &str) -> anyhow::Result<Vec<Token>> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        let c = chars[at];
        let next = chars.get(at + 1).copied();
        if c.is_whitespace() {
            at += 1;
        } else if c == '/' && next == Some('/') {
            at = line_end(&chars, at);
        } else if c == '/' && next == Some('*') {
            at = block_comment_end(&chars, at)?;
        } else if c == '"' {
            let (text, end) = string_literal(&chars, at + 1)?;
            tokens.push(Token::Str(text));
            at = end;
        } else if c == 'r' && matches!(next, Some('"' | '#')) {
            let (text, end) = raw_string_literal(&chars, at + 1)?;
            tokens.push(Token::Str(text));
            at = end;
        } else if c == '\'' {
            at = char_literal_end(&chars, at);
        } else if c.is_alphanumeric() || c == '_' {
            let end = (at..chars.len())
                .find(|&i| !(chars[i].is_alphanumeric() || chars[i] == '_'))
                .unwrap_or(chars.len());
            tokens.push(Token::Ident(chars[at..end].iter().collect()));
            at = end;
        } else {
            tokens.push(Token::Punct(c));
            at += 1;
        }
    }
    Ok(tokens)
}

/// Index of the `\n` ending the line at `at` (or the end of input).
fn line_end(chars: &[char], at: usize) -> usize {
    (at..chars.len())
        .find(|&i| chars[i] == '\n')
        .unwrap_or(chars.len())
}

/// Index just past the (possibly nested) block comment starting at `at`.
fn block_comment_end(chars: &[char], mut at: usize) -> anyhow::Result<usize> {
    let mut depth = 0usize;
    while at + 1 < chars.len() {
        match (chars[at], chars[at + 1]) {
            ('/', '*') => {
                depth += 1;
                at += 2;
            }
            ('*', '/') => {
                depth -= 1;
                at += 2;
                if depth == 0 {
                    return Ok(at);
                }
            }
            _ => at += 1,
        }
    }
    bail!("unterminated block comment")
}

/// The contents of a `"…"` literal whose first content character is at
/// `at`, and the index just past its closing quote.
fn string_literal(chars: &[char], mut at: usize) -> anyhow::Result<(String, usize)> {
    let mut text = String::new();
    while let Some(&c) = chars.get(at) {
        match c {
            '"' => return Ok((text, at + 1)),
            '\\' => {
                text.push(c);
                text.extend(chars.get(at + 1));
                at += 2;
            }
            _ => {
                text.push(c);
                at += 1;
            }
        }
    }
    bail!("unterminated string literal")
}

/// Like [`string_literal`] for `r#"…"#`; `at` is just past the `r`.
fn raw_string_literal(chars: &[char], at: usize) -> anyhow::Result<(String, usize)> {
    let hashes = chars[at..].iter().take_while(|&&c| c == '#').count();
    let open = at + hashes;
    if chars.get(open) != Some(&'"') {
        bail!("malformed raw string literal");
    }
    let closing: Vec<char> = std::iter::once('"')
        .chain(std::iter::repeat_n('#', hashes))
        .collect();
    let body = open + 1;
    let end = (body..chars.len())
        .find(|&i| chars[i..].starts_with(&closing))
        .context("unterminated raw string literal")?;
    Ok((chars[body..end].iter().collect(), end + closing.len()))
}

/// Index just past a character literal starting at `at`, or just past the
/// quote of a lifetime.
fn char_literal_end(chars: &[char], at: usize) -> usize {
    match chars.get(at + 1) {
        Some('\\') => (at + 2..chars.len())
            .find(|&i| chars[i] == '\'')
            .map_or(chars.len(), |i| i + 1),
        Some(_) if chars.get(at + 2) == Some(&'\'') => at + 3,
        _ => at + 1,
    }
}

/// Every (method, path) the router in `source` serves.
pub fn router_routes(source: &str) -> anyhow::Result<BTreeSet<Route>> {
    let tokens = tokenize(source)?;
    let mut routes = BTreeSet::new();
    for at in 0..tokens.len() {
        let Some(Token::Ident(name)) = tokens.get(at + 1) else {
            continue;
        };
        let is_call =
            tokens[at] == Token::Punct('.') && tokens.get(at + 2) == Some(&Token::Punct('('));
        if !is_call {
            continue;
        }
        if OPAQUE_ROUTER_CALLS.contains(&name.as_str()) {
            bail!(
                "`.{name}(..)` adds routes this check cannot read; list them with `.route` instead"
            );
        }
        if name == "route" {
            let (path, methods) = route_call(&tokens, at + 3)?;
            for method in methods {
                if !routes.insert(Route::new(&method, &path)) {
                    bail!("{method} {path} is routed twice");
                }
            }
        }
    }
    if routes.is_empty() {
        bail!("no `.route(..)` call found");
    }
    Ok(routes)
}

/// The path and methods of a `.route(` call whose arguments start at `at`.
fn route_call(tokens: &[Token], at: usize) -> anyhow::Result<(String, Vec<String>)> {
    let (Some(Token::Str(path)), Some(Token::Punct(','))) = (tokens.get(at), tokens.get(at + 1))
    else {
        bail!("a `.route(..)` call whose first argument is not a string literal");
    };
    let mut methods = Vec::new();
    // Depth 0 is the argument list of `.route(`: every call made there is a
    // method router (`get(h)`, `.post(h)`); calls deeper down are handlers.
    let mut depth = 0usize;
    for (offset, token) in tokens[at + 2..].iter().enumerate() {
        match token {
            Token::Punct('(' | '[' | '{') => depth += 1,
            Token::Punct(')' | ']' | '}') if depth == 0 => {
                if methods.is_empty() {
                    bail!("route {path} has no method");
                }
                return Ok((path.clone(), methods));
            }
            Token::Punct(')' | ']' | '}') => depth -= 1,
            Token::Ident(name)
                if depth == 0 && tokens.get(at + 3 + offset) == Some(&Token::Punct('(')) =>
            {
                if !METHODS.contains(&name.as_str()) {
                    bail!("route {path}: `{name}(..)` is not a method router this check knows");
                }
                methods.push(name.clone());
            }
            _ => {}
        }
    }
    bail!("route {path}: unterminated `.route(` call")
}

/// Every (method, path) the OpenAPI document in `yaml` describes.
pub fn openapi_routes(yaml: &str) -> anyhow::Result<BTreeSet<Route>> {
    let mut lines = yaml
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line))
        .filter(|(_, line)| !is_blank_or_comment(line));
    lines
        .by_ref()
        .find(|(_, line)| is_paths_key(line))
        .context("no top-level `paths:` key")?;
    let mut routes = BTreeSet::new();
    let mut path_indent = None;
    let mut operation_indent = None;
    let mut current_path: Option<String> = None;
    for (number, line) in lines {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if indent == 0 {
            break;
        }
        let at = |message: String| anyhow::anyhow!("line {number}: {message}");
        let path_indent = *path_indent.get_or_insert(indent);
        if indent < path_indent {
            return Err(at("indented less than the paths before it".into()));
        }
        if indent == path_indent {
            let path = mapping_key(line.trim_start()).map_err(at)?;
            if !path.starts_with('/') {
                return Err(at(format!("path `{path}` does not start with `/`")));
            }
            current_path = Some(path);
            continue;
        }
        let operation_indent = *operation_indent.get_or_insert(indent);
        if indent > operation_indent {
            continue;
        }
        if indent < operation_indent {
            return Err(at("indentation between a path and its operations".into()));
        }
        let key = mapping_key(line.trim_start()).map_err(at)?;
        if key == "$ref" {
            return Err(at("path items by `$ref` are not supported".into()));
        }
        if METHODS.contains(&key.as_str()) {
            let path = current_path
                .as_deref()
                .context("an operation before any path")?;
            if !routes.insert(Route::new(&key, path)) {
                return Err(at(format!("{key} {path} is described twice")));
            }
        }
    }
    if routes.is_empty() {
        bail!("`paths:` describes no operation");
    }
    Ok(routes)
}

fn is_blank_or_comment(line: &str) -> bool {
    let trimmed = line.trim_start();
    trimmed.is_empty() || trimmed.starts_with('#')
}

/// Whether `line` is the top-level `paths:` key with a block mapping below.
fn is_paths_key(line: &str) -> bool {
    line.strip_prefix("paths:")
        .is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#'))
}

/// The key of a `key:` or `"key":` mapping line (quotes removed).
fn mapping_key(line: &str) -> Result<String, String> {
    let (key, rest) = match line.chars().next() {
        Some(quote @ ('"' | '\'')) => {
            let end = line[1..]
                .find(quote)
                .ok_or_else(|| format!("unterminated quoted key in `{line}`"))?;
            (&line[1..=end], &line[end + 2..])
        }
        _ => {
            let end = line
                .find(':')
                .ok_or_else(|| format!("`{line}` is not a `key:` line"))?;
            (&line[..end], &line[end..])
        }
    };
    if !rest.starts_with(':') {
        return Err(format!("`{line}` is not a `key:` line"));
    }
    Ok(key.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(pairs: &[(&str, &str)]) -> BTreeSet<Route> {
        pairs.iter().map(|(m, p)| Route::new(m, p)).collect()
    }

    const ROUTER: &str = r##"
        // .route("/commented", get(nothing))
        /* a block /* nested */ comment .route("/blocked", get(x)) */
        pub fn router(state: AppState) -> Router {
            let quote = '"';
            let lifetime: &'static str = "not .route(\"/fake\", get(x))";
            Router::new()
                .route("/healthz", get(health::healthz))
                .route(
                    "/internal/v1/runs/{run_id}/events",
                    post(runs::append).get(runs::events),
                )
                .route("/closure", get(|| async { Json(json!({"a": [1]})) }))
                .route(r#"/raw"#, axum::routing::put(handler))
                .fallback(|| async { ApiError::not_found("no such route") })
                .with_state(state)
        }
    "##;

    #[test]
    fn the_router_extraction_sees_every_route_and_skips_comments_and_strings() {
        assert_eq!(
            router_routes(ROUTER).unwrap(),
            routes(&[
                ("GET", "/healthz"),
                ("POST", "/internal/v1/runs/{run_id}/events"),
                ("GET", "/internal/v1/runs/{run_id}/events"),
                ("GET", "/closure"),
                ("PUT", "/raw"),
            ])
        );
    }

    #[test]
    fn routes_the_check_cannot_read_fail_it() {
        for source in [
            r#"Router::new().route("/a", get(a)).nest("/b", other())"#,
            r#"Router::new().route("/a", any(a))"#,
            r#"Router::new().route(PATH, get(a))"#,
            r#"Router::new().route("/a", get(a)).route("/a", get(b))"#,
            r#"Router::new()"#,
        ] {
            assert!(router_routes(source).is_err(), "{source}");
        }
    }

    const DOCUMENT: &str = r#"openapi: 3.1.0
info:
  description: |
    paths:
      /not-a-path:
        get: {}
paths:
  # a comment
  /healthz:
    get:
      description: |
        post: this is prose
      responses: {}
  "/internal/v1/runs/{run_id}/events":
    parameters: []
    post:
      responses: {}

    get:
      responses: {}
components:
  schemas: {}
"#;

    #[test]
    fn the_document_extraction_reads_paths_and_methods_only() {
        assert_eq!(
            openapi_routes(DOCUMENT).unwrap(),
            routes(&[
                ("GET", "/healthz"),
                ("POST", "/internal/v1/runs/{run_id}/events"),
                ("GET", "/internal/v1/runs/{run_id}/events"),
            ])
        );
    }

    #[test]
    fn malformed_documents_fail() {
        for document in [
            "openapi: 3.1.0\n",
            "paths:\n  healthz:\n    get: {}\n",
            "paths:\n    /a:\n      get: {}\n  /b:\n    get: {}\n",
            "paths:\n  /a:\n    $ref: '#/x'\n",
            "paths:\n  /a:\n    summary: nothing\n",
        ] {
            assert!(openapi_routes(document).is_err(), "{document}");
        }
    }

    #[test]
    fn mismatches_name_both_sides() {
        let served = routes(&[("GET", "/a"), ("POST", "/b")]);
        let documented = routes(&[("GET", "/a"), ("GET", "/b")]);
        let lines = mismatches(&served, &documented);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("POST /b") && lines[0].contains("missing from"));
        assert!(lines[1].contains("GET /b") && lines[1].contains("not served"));
        assert!(mismatches(&served, &served).is_empty());
    }

    #[test]
    fn the_project_files_parse() {
        let root = crate::workspace_root();
        let router = std::fs::read_to_string(root.join(ROUTER_FILE)).unwrap();
        let document = std::fs::read_to_string(root.join(OPENAPI_FILE)).unwrap();
        let healthz = Route::new("get", "/healthz");
        assert!(router_routes(&router).unwrap().contains(&healthz));
        assert!(openapi_routes(&document).unwrap().contains(&healthz));
    }
}
