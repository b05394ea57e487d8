//! History rules: how much a room keeps, how much a client is sent, and when old messages
//! are trimmed. The SQL that carries them out lives in the Durable Object's `message_store`.

use crate::chat::protocol::ChatMessage;

/// A room keeps at least its most recent this-many messages.
pub const RETAINED: u64 = 1_000;

/// Trimming runs once per this-many messages rather than on every insert, so a message
/// costs one SQLite write; the room briefly holds up to `RETAINED + TRIM_EVERY - 1`.
pub const TRIM_EVERY: u64 = 100;

/// Most messages a welcome frame carries.
pub const WELCOME_MAX: u32 = 100;

/// Most bytes of message JSON in a welcome or a `/history` answer: 100 messages of 2,000
/// four-byte characters would be 800 KB, sent for a 200-byte request.
pub const BYTE_BUDGET: usize = 256 * 1024;

/// `GET /chat/ROOM/history?limit=N[&since=ID|&before=ID|&after=SEQ]`: default and largest N.
pub const HTTP_DEFAULT: u32 = 50;
pub const HTTP_MAX: u32 = 100;

/// Which messages to return, always oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The newest `limit` messages.
    Latest { limit: u32 },
    /// The first `limit` messages with an id above `since`: what a reconnecting client
    /// missed, in order, so that it can page on with the last id it received.
    After { since: u64, limit: u32 },
    /// The newest `limit` messages with an id below `before`: paging back.
    Before { before: u64, limit: u32 },
    /// Every message changed (posted, edited, deleted, reacted to) after sequence number
    /// `after`: the `limit` with the lowest `seq`, in their current state, sorted by id. A
    /// client that got fewer changes than there are resumes again from the highest `seq` it got.
    Changed { after: u64, limit: u32 },
}

impl Window {
    /// The welcome's window: the newest messages, or those after `since` (an id) or changed
    /// after `after` (a seq); the route never gives both.
    pub fn for_welcome(since: Option<u64>, after: Option<u64>) -> Window {
        match (since, after) {
            (_, Some(after)) => Window::Changed { after, limit: WELCOME_MAX },
            (Some(since), None) => Window::After { since, limit: WELCOME_MAX },
            (None, None) => Window::Latest { limit: WELCOME_MAX },
        }
    }
}

/// Where the room's history stood when a moderator last cleared it: its last id and sequence
/// number then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastClear {
    pub id: u64,
    pub seq: u64,
}

impl Window {
    /// Whether a client resuming with this window may hold messages a clear has since removed:
    /// its position is at or before the clear's. It then drops what it holds before taking the
    /// welcome's history (the welcome says `cleared`). A client that saw the clear live and
    /// nothing after is told again, which changes nothing for it.
    pub fn missed_clear(self, clear: Option<LastClear>) -> bool {
        match (self, clear) {
            (Window::After { since, .. }, Some(clear)) => since <= clear.id,
            (Window::Changed { after, .. }, Some(clear)) => after <= clear.seq,
            _ => false,
        }
    }

    /// Drops whole messages until the rest fit `BYTE_BUDGET`: the oldest for `Latest` and
    /// `Before`, which show the newest; the newest for `After`, whose reader pages on from the
    /// last one it got; the latest changed for `Changed`, whose reader resumes from the highest
    /// `seq` it got. The first message of `After` and `Changed` always stays, so that paging
    /// never gets stuck.
    pub fn fit_budget(self, messages: &mut Vec<ChatMessage>) {
        let mut spent = 0;
        let mut fits = |message: &ChatMessage| {
            spent += message.json_len() + 1;
            spent <= BYTE_BUDGET
        };
        match self {
            Window::Latest { .. } | Window::Before { .. } => {
                let kept = messages.iter().rev().take_while(|m| fits(m)).count();
                messages.drain(..messages.len() - kept);
            }
            Window::After { .. } => {
                let kept = messages.iter().take_while(|m| fits(m)).count().max(1);
                messages.truncate(kept);
            }
            Window::Changed { .. } => {
                sort_by_number(messages, |m| m.seq);
                let kept = messages.iter().take_while(|m| fits(m)).count().max(1);
                messages.truncate(kept);
                sort_by_number(messages, |m| m.id);
            }
        }
    }
}

/// One sort for both keys: a closure per key would be a second copy of the sort in the WASM module.
fn sort_by_number(messages: &mut [ChatMessage], key: fn(&ChatMessage) -> u64) {
    messages.sort_unstable_by(|a, b| key(a).cmp(&key(b)));
}

/// Reads `limit` from a history request: absent means the default, and anything but a
/// whole number from 1 to `HTTP_MAX` is refused.
pub fn parse_limit(raw: Option<&str>) -> Option<u32> {
    match raw {
        None => Some(HTTP_DEFAULT),
        Some(raw) => raw.parse().ok().filter(|n| (1..=HTTP_MAX).contains(n)),
    }
}

/// After storing message `new_id`, delete every message with an id at or below the
/// returned one.
pub fn trim_cutoff(new_id: u64) -> Option<u64> {
    (new_id % TRIM_EVERY == 0 && new_id > RETAINED).then(|| new_id - RETAINED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_from_before_a_clear_is_told_of_it() {
        let clear = Some(LastClear { id: 40, seq: 90 });
        let changed = |after| Window::Changed { after, limit: WELCOME_MAX };
        let since = |since| Window::After { since, limit: WELCOME_MAX };
        assert!(changed(12).missed_clear(clear) && changed(90).missed_clear(clear));
        assert!(!changed(91).missed_clear(clear), "a post after the clear was seen");
        assert!(since(40).missed_clear(clear) && !since(41).missed_clear(clear));
        assert!(!changed(0).missed_clear(None), "never cleared");
        assert!(!Window::Latest { limit: 5 }.missed_clear(clear), "a first join holds nothing");
    }

    #[test]
    fn limit_defaults_and_bounds() {
        assert_eq!(parse_limit(None), Some(50));
        assert_eq!(parse_limit(Some("1")), Some(1));
        assert_eq!(parse_limit(Some("100")), Some(100));
        for bad in ["0", "101", "-1", "abc", "", "1.5", "99999999999999999999"] {
            assert_eq!(parse_limit(Some(bad)), None, "{bad}");
        }
    }

    #[test]
    fn welcome_window() {
        assert_eq!(Window::for_welcome(None, None), Window::Latest { limit: 100 });
        assert_eq!(Window::for_welcome(Some(7), None), Window::After { since: 7, limit: 100 });
        assert_eq!(Window::for_welcome(None, Some(9)), Window::Changed { after: 9, limit: 100 });
    }

    fn big(id: u64) -> ChatMessage {
        ChatMessage { id, nick: "Ann".into(), text: "😀".repeat(2_000), at: id, deleted: false, uid: None, ..Default::default() }
    }

    #[test]
    fn history_fits_the_byte_budget_with_whole_messages() {
        let all: Vec<ChatMessage> = (1..=100).map(big).collect();
        let mut latest = all.clone();
        Window::Latest { limit: 100 }.fit_budget(&mut latest);
        assert!(serde_json::to_string(&latest).unwrap().len() <= BYTE_BUDGET + 2);
        assert_eq!(latest.len(), 32);
        assert_eq!(latest.last(), all.last(), "the newest are kept");
        assert_eq!(latest[0].text, all[0].text, "never a cut message");

        let mut after = all.clone();
        Window::After { since: 0, limit: 100 }.fit_budget(&mut after);
        assert_eq!(after.len(), 32);
        assert_eq!(after[0].id, 1, "the first after since is kept, the reader pages on");

        let mut small: Vec<ChatMessage> = (1..=100).map(|id| ChatMessage { text: "hi".into(), ..big(id) }).collect();
        Window::Latest { limit: 100 }.fit_budget(&mut small);
        assert_eq!(small.len(), 100, "ordinary history is not touched");
        // Changed: message 1 was edited last; the lowest seqs are kept, then sorted by id.
        let mut changed: Vec<ChatMessage> = (1..=100).map(|id| ChatMessage { seq: if id == 1 { 500 } else { id }, ..big(id) }).collect();
        Window::Changed { after: 0, limit: 100 }.fit_budget(&mut changed);
        assert_eq!(changed.len(), 32);
        assert_eq!((changed[0].id, changed[31].id), (2, 33), "message 1 changed last: it comes when the reader resumes");
        let mut before = all.clone();
        Window::Before { before: 101, limit: 100 }.fit_budget(&mut before);
        assert_eq!(before.last(), all.last());
        let mut none = Vec::new();
        Window::After { since: 0, limit: 1 }.fit_budget(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn trimming_keeps_the_newest_thousand_and_runs_in_batches() {
        assert_eq!(trim_cutoff(1_000), None);
        assert_eq!(trim_cutoff(1_001), None);
        assert_eq!(trim_cutoff(1_100), Some(100));
        assert_eq!(trim_cutoff(5_000), Some(4_000));
        let trims = (1..=10_000).filter(|id| trim_cutoff(*id).is_some()).count();
        assert_eq!(trims, 90);
        for id in 1..=10_000u64 {
            if let Some(cutoff) = trim_cutoff(id) {
                assert_eq!(id - cutoff, RETAINED, "exactly the newest {RETAINED} remain after a trim");
            }
        }
    }
}
