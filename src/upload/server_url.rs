//! The one check of a hotframe server's base URL (`--server`), shared by every command
//! that talks to a server: `agent`, `scrape` (both through the uploader), `export`,
//! `import` and `win`. It lives in `upload` because that module is built with every
//! feature.
//!
//! In: the text the user gave. Out: the base URL without a trailing `/`, or an error that
//! says what is wrong and what to write instead. Must not: do any I/O (no name lookup, no
//! connection).

/// A `--server` value that is not a usable `http://HOST[:PORT][/PATH]` base URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --server {given:?}: {problem}; use an http:// base URL such as {example} (no TLS: put a TLS proxy in front if needed)")]
pub struct BadServerUrl {
    /// The value as given.
    pub given: String,
    /// What is wrong with it, e.g. "no scheme".
    pub problem: &'static str,
    /// The URL to write instead (the given host with `http://` where one can be guessed).
    pub example: String,
}

/// The example of a well-formed server URL in messages.
const EXAMPLE: &str = "http://127.0.0.1:4040";

/// Checks `text` as a server base URL and returns it trimmed, without a trailing `/`.
pub fn server_base_url(text: &str) -> Result<String, BadServerUrl> {
    let trimmed = text.trim();
    let bad = |problem, example: String| BadServerUrl { given: text.to_string(), problem, example };
    let Some((scheme, rest)) = trimmed.split_once("://") else {
        let trimmed = trimmed.trim_end_matches('/');
        let example = if looks_like_host(trimmed) { format!("http://{trimmed}") } else { EXAMPLE.to_string() };
        return Err(bad("no scheme", example));
    };
    let rest = rest.trim_end_matches('/');
    let example = if looks_like_host(rest) { format!("http://{rest}") } else { EXAMPLE.to_string() };
    if !scheme.eq_ignore_ascii_case("http") {
        let problem = if scheme.eq_ignore_ascii_case("https") { "https is not supported" } else { "not http" };
        return Err(bad(problem, example));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err(bad("no host", EXAMPLE.to_string()));
    }
    if !looks_like_host(authority) {
        return Err(bad("not a HOST[:PORT]", EXAMPLE.to_string()));
    }
    if rest.contains(char::is_whitespace) {
        return Err(bad("white space in the URL", EXAMPLE.to_string()));
    }
    Ok(format!("http://{rest}"))
}

/// True if `text` (up to the first `/`) is HOST or HOST:PORT with a numeric port.
fn looks_like_host(text: &str) -> bool {
    let authority = text.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains(|c: char| c.is_whitespace() || c == '@') {
        return false;
    }
    // A bracketed IPv6 literal keeps its colons inside the brackets.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    !host.is_empty() && port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_urls_come_back_without_a_trailing_slash() {
        assert_eq!(server_base_url("http://127.0.0.1:4040/").unwrap(), "http://127.0.0.1:4040");
        assert_eq!(server_base_url(" http://h ").unwrap(), "http://h");
        assert_eq!(server_base_url("HTTP://h:1").unwrap(), "http://h:1");
        assert_eq!(server_base_url("http://proxy:80/hotframe/").unwrap(), "http://proxy:80/hotframe");
        assert_eq!(server_base_url("http://[::1]:4040").unwrap(), "http://[::1]:4040");
    }

    #[test]
    fn bad_urls_say_what_to_write() {
        let err = server_base_url("127.0.0.1:4040").unwrap_err();
        assert_eq!(err.problem, "no scheme");
        assert_eq!(err.example, "http://127.0.0.1:4040");
        let text = err.to_string();
        assert!(text.contains("\"127.0.0.1:4040\"") && text.contains("no TLS"), "{text}");
        let https = server_base_url("https://h:1").unwrap_err();
        assert_eq!((https.problem, https.example.as_str()), ("https is not supported", "http://h:1"));
        assert_eq!(server_base_url("http://").unwrap_err().problem, "no host");
        assert_eq!(server_base_url("").unwrap_err().problem, "no scheme");
        assert_eq!(server_base_url("http://h:port").unwrap_err().problem, "not a HOST[:PORT]");
        assert_eq!(server_base_url("http://h/a b").unwrap_err().problem, "white space in the URL");
        assert_eq!(server_base_url("ftp://h").unwrap_err().problem, "not http");
    }
}
