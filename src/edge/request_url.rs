//! The parts of a request URL that routing needs, read from the runtime's URL string without a
//! general URL parser: the `url` crate (with `idna`'s Unicode tables) was about a quarter of the
//! WASM module, and it loaded on every cold start for three fields.
//!
//! It does what the WHATWG URL parser does to an `http(s)` URL on the way to those fields:
//! tabs and newlines dropped, `\` read as `/`, dot segments (`.`, `..` and their `%2e` forms)
//! resolved, scheme and host lowercased, the default port dropped. Percent-escapes are left as
//! they came: routing decodes them. International host names and numeric IPv4 forms are not
//! rewritten: the runtime hands over the Host header, which browsers send in ASCII.

/// A request URL, as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestUrl {
    /// `scheme://host[:port]`, lowercase, without a default port.
    pub origin: String,
    /// The path with dot segments resolved, still percent-encoded; always starts with `/`.
    pub path: String,
    /// What follows `?`, up to any `#`.
    pub query: Option<String>,
}

impl RequestUrl {
    /// `None` for a string without `scheme://`, which the runtime never hands over.
    pub fn parse(raw: &str) -> Option<RequestUrl> {
        let cleaned: String =
            raw.trim_matches(|c: char| c <= ' ').chars().filter(|c| !matches!(c, '\t' | '\n' | '\r')).collect();
        let (scheme, rest) = cleaned.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let rest = rest.split('#').next().unwrap_or_default();
        let authority_end = rest.find(['/', '\\', '?']).unwrap_or(rest.len());
        let (authority, rest) = rest.split_at(authority_end);
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query.to_owned())),
            None => (rest, None),
        };
        Some(RequestUrl { origin: origin(&scheme, authority), path: resolve_dots(path), query })
    }
}

fn origin(scheme: &str, authority: &str) -> String {
    let host_port = authority.rsplit('@').next().unwrap_or_default().to_ascii_lowercase();
    let default_port = match scheme {
        "http" | "ws" => Some(":80"),
        "https" | "wss" => Some(":443"),
        _ => None,
    };
    let host_port = match default_port {
        Some(port) => host_port.strip_suffix(port).unwrap_or(&host_port),
        None => &host_port,
    };
    format!("{scheme}://{host_port}")
}

/// The path of a special URL, segment by segment, as the WHATWG parser builds it.
fn resolve_dots(path: &str) -> String {
    let raw: Vec<&str> = path.split(['/', '\\']).skip(1).collect();
    let mut segments: Vec<&str> = Vec::with_capacity(raw.len());
    for (i, segment) in raw.iter().enumerate() {
        let last = i + 1 == raw.len();
        let lower = segment.to_ascii_lowercase();
        match lower.as_str() {
            ".." | ".%2e" | "%2e." | "%2e%2e" => {
                segments.pop();
                if last {
                    segments.push("");
                }
            }
            "." | "%2e" => {
                if last {
                    segments.push("");
                }
            }
            _ => segments.push(segment),
        }
    }
    format!("/{}", segments.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(raw: &str) -> (String, String, Option<String>) {
        let url = RequestUrl::parse(raw).unwrap();
        (url.origin, url.path, url.query)
    }

    #[test]
    fn origin_path_and_query() {
        assert_eq!(
            parts("http://127.0.0.1:8787/chat/a?nick=Ann&since=3"),
            ("http://127.0.0.1:8787".into(), "/chat/a".into(), Some("nick=Ann&since=3".into()))
        );
        let https = ("https://chat.example.com".into(), "/health".into(), None);
        assert_eq!(parts("https://Chat.Example.COM:443/health"), https);
        assert_eq!(parts("HTTP://a:80"), ("http://a".into(), "/".into(), None));
        assert_eq!(parts("http://a:8080/x?"), ("http://a:8080".into(), "/x".into(), Some("".into())));
        assert_eq!(parts("http://u:p@a/x?q#frag"), ("http://a".into(), "/x".into(), Some("q".into())));
        assert_eq!(parts("http://a/x#f?not-a-query"), ("http://a".into(), "/x".into(), None));
        assert_eq!(RequestUrl::parse("/chat/a"), None);
    }

    #[test]
    fn dot_segments_resolve_as_the_url_standard_says() {
        let path = |p: &str| RequestUrl::parse(&format!("http://h{p}")).unwrap().path;
        assert_eq!(path("/chat/../users"), "/users");
        assert_eq!(path("/chat/%2E%2E/users"), "/users");
        assert_eq!(path("/chat/.%2e/users"), "/users");
        assert_eq!(path("/chat/%2e./users"), "/users");
        assert_eq!(path("/chat/.."), "/");
        assert_eq!(path("/chat/%2e"), "/chat/");
        assert_eq!(path("/chat/./a"), "/chat/a");
        assert_eq!(path("/../../chat/a"), "/chat/a");
        assert_eq!(path("/chat/.../x"), "/chat/.../x", "three dots are a name");
        assert_eq!(path("/chat\\a\\..\\b"), "/chat/b", "backslashes are slashes in http URLs");
        assert_eq!(path("/chat/a%2F..%2Fb"), "/chat/a%2F..%2Fb", "an escaped slash is not a separator");
        assert_eq!(path("/chat//a"), "/chat//a");
        assert_eq!(path("/ch\tat/\na"), "/chat/a");
    }

    proptest::proptest! {
        /// Paths and queries built from the pieces that matter read exactly as the `url` crate
        /// (the WHATWG parser the Worker used before) reads them, once percent-decoded as routing does.
        #[test]
        fn reads_urls_as_the_url_crate_does(
            host in proptest::sample::select(vec!["127.0.0.1:8787", "LocalHost:80", "a.example:443", "x"]),
            scheme in proptest::sample::select(vec!["http", "https", "HTTP"]),
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "/", "\\", ".", "..", "%2e", "%2E", ".%2E", "%2e.", "chat", "users", "a", "%2F", "%41", "é", " ",
                "\"", "{", "?", "#", "=", "&", "+", "%",
            ]), 0..12),
        ) {
            let raw = format!("{scheme}://{host}/{}", pieces.concat());
            let ours = RequestUrl::parse(&raw).unwrap();
            let theirs = url::Url::parse(&raw).unwrap();
            let decode = |s: &str| crate::edge::routes::percent_decode(s);
            proptest::prop_assert_eq!(&ours.origin, &theirs.origin().ascii_serialization());
            let segments = |p: &str| p.split('/').map(decode).collect::<Vec<_>>();
            proptest::prop_assert_eq!(segments(&ours.path), segments(theirs.path()));
            proptest::prop_assert_eq!(ours.query.as_deref().map(decode), theirs.query().map(decode));
        }
    }
}
