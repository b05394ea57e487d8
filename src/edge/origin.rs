//! Which web pages may open a chat socket. Browsers send `Origin` on every WebSocket
//! upgrade; a page from an origin the operator has not allowed is refused, so another site
//! cannot chat in the name of its visitors. Clients that are not browsers send no `Origin`
//! and are allowed: they could forge one anyway.

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowedOrigins {
    any: bool,
    listed: Vec<String>,
}

impl AllowedOrigins {
    /// Reads the comma-separated `ALLOWED_ORIGINS` var, where `*` allows every origin.
    pub fn parse(var: &str) -> Self {
        let mut allowed = AllowedOrigins::default();
        for entry in var.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                allowed.any = true;
            } else {
                allowed.listed.push(normalise(entry));
            }
        }
        allowed
    }

    /// Whether an upgrade carrying `origin` may proceed on a Worker serving `own_origin`.
    pub fn admits(&self, origin: Option<&str>, own_origin: &str) -> bool {
        let Some(origin) = origin else { return true };
        let origin = normalise(origin);
        self.any || origin == normalise(own_origin) || self.listed.contains(&origin)
    }

    /// The value for `Access-Control-Allow-Origin` on a read-only route (users, history):
    /// pages from listed origins may read what their sockets could read anyway.
    pub fn cors_origin<'o>(&self, origin: Option<&'o str>, own_origin: &str) -> Option<&'o str> {
        let origin = origin?;
        (normalise(origin) != normalise(own_origin) && self.admits(Some(origin), own_origin)).then_some(origin)
    }
}

/// Origins compare without case and without a trailing slash.
fn normalise(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "http://localhost:8787";

    #[test]
    fn no_origin_and_own_origin_are_admitted() {
        let none = AllowedOrigins::parse("");
        assert!(none.admits(None, OWN));
        assert!(none.admits(Some("http://LOCALHOST:8787"), OWN));
        assert!(!none.admits(Some("http://evil.example"), OWN));
        assert!(!none.admits(Some("null"), OWN));
        assert!(!none.admits(Some("http://localhost:8788"), OWN));
    }

    #[test]
    fn listed_origins_are_admitted() {
        let allowed = AllowedOrigins::parse(" https://a.example , http://127.0.0.1:9000/,");
        assert!(allowed.admits(Some("https://a.example"), OWN));
        assert!(allowed.admits(Some("http://127.0.0.1:9000"), OWN));
        assert!(!allowed.admits(Some("https://b.example"), OWN));
        assert!(!allowed.admits(Some("https://a.example.evil"), OWN));
    }

    #[test]
    fn cross_origin_reads_are_allowed_for_listed_origins_only() {
        let allowed = AllowedOrigins::parse("https://a.example");
        assert_eq!(allowed.cors_origin(Some("https://a.example"), OWN), Some("https://a.example"));
        assert_eq!(allowed.cors_origin(Some("https://b.example"), OWN), None);
        assert_eq!(allowed.cors_origin(Some(OWN), OWN), None, "same-origin reads need no CORS");
        assert_eq!(allowed.cors_origin(None, OWN), None);
    }

    #[test]
    fn star_admits_everyone() {
        let allowed = AllowedOrigins::parse("https://a.example,*");
        assert!(allowed.admits(Some("https://anything.example"), OWN));
    }
}
