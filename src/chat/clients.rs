//! Clients: the budgets that all the sockets from one address share in a room, so that
//! opening more sockets, or reconnecting, buys no more messages or joins while the room is
//! awake. A client is known by a salted hash of its address, never by the address itself:
//! the hash is what a socket's attachment carries through hibernation.

use crate::chat::rate_limit::{RateLimit, SlidingWindow, TokenBucket};
use crate::edge::config::RoomLimits;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// A salted hash of a client's address, 53 bits so that it crosses into JavaScript exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ClientKey(u64);

impl ClientKey {
    /// The key of `address` under `salt`, a secret the room draws at random and keeps in
    /// memory only. The same address under another salt gives an unrelated key.
    pub fn of(address: &str, salt: [u64; 2]) -> ClientKey {
        let mut hasher = DefaultHasher::new();
        salt.hash(&mut hasher);
        address.hash(&mut hasher);
        ClientKey(hasher.finish() & ((1 << 53) - 1))
    }

    /// The key as a number, for a socket's attachment.
    pub fn bits(self) -> u64 {
        self.0
    }

    /// The key `bits` gave; `None` for a number no key has.
    pub fn from_bits(bits: u64) -> Option<ClientKey> {
        (bits < 1 << 53).then_some(ClientKey(bits))
    }
}

/// What one client has left in one room.
#[derive(Debug)]
struct Client {
    frames: TokenBucket,
    joins: SlidingWindow,
    sockets: u32,
}

/// Every client a room has seen recently.
#[derive(Debug, Default)]
pub struct Clients {
    clients: HashMap<ClientKey, Client>,
}

/// Forgetting clients with no socket whose budgets have refilled starts once there are this
/// many, and forgets nothing a client could notice.
const SWEEP_ABOVE: usize = 4_096;

impl Clients {
    /// Counts a join of `key`; false if it is over its joins per 10 s.
    pub fn try_join(&mut self, key: ClientKey, limits: &RoomLimits, now: u64) -> bool {
        if self.clients.len() >= SWEEP_ABOVE {
            self.clients.retain(|_, c| c.sockets > 0 || !c.frames.is_full_at(limits.client, now) || !c.joins.is_empty_at(now));
        }
        self.entry(key, limits.client, now).joins.try_count(limits.client_joins, now)
    }

    /// How many member sockets `key` has.
    pub fn sockets(&self, key: ClientKey) -> u32 {
        self.clients.get(&key).map_or(0, |client| client.sockets)
    }

    /// A socket of `key` is now a member.
    pub fn add_socket(&mut self, key: ClientKey, limit: RateLimit, now: u64) {
        self.entry(key, limit, now).sockets += 1;
    }

    /// A socket of `key` is no longer a member; the client's budgets stay.
    pub fn remove_socket(&mut self, key: ClientKey) {
        if let Some(client) = self.clients.get_mut(&key) {
            client.sockets = client.sockets.saturating_sub(1);
        }
    }

    /// Takes one frame from the budget of `key`, which has a member socket.
    pub fn try_frame(&mut self, key: ClientKey, limit: RateLimit, now: u64) -> bool {
        self.clients.get_mut(&key).is_none_or(|client| client.frames.try_take(limit, now))
    }

    fn entry(&mut self, key: ClientKey, limit: RateLimit, now: u64) -> &mut Client {
        self.clients.entry(key).or_insert_with(|| Client {
            frames: TokenBucket::full(limit, now),
            joins: SlidingWindow::new(now),
            sockets: 0,
        })
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_address_and_salt_and_are_53_bits() {
        let salt = [1, 2];
        assert_eq!(ClientKey::of("203.0.113.7", salt), ClientKey::of("203.0.113.7", salt));
        assert_ne!(ClientKey::of("203.0.113.7", salt), ClientKey::of("203.0.113.8", salt));
        assert_ne!(ClientKey::of("203.0.113.7", salt), ClientKey::of("203.0.113.7", [1, 3]));
        for address in ["", "::1", "127.0.0.1", "2001:db8::1"] {
            assert!(ClientKey::of(address, salt).0 < 1 << 53);
        }
    }

    #[test]
    fn a_client_shares_one_frame_budget_across_sockets_and_reconnects() {
        let limits = RoomLimits::default();
        let mut clients = Clients::default();
        let key = ClientKey::of("198.51.100.1", [0, 0]);
        clients.add_socket(key, limits.client, 0);
        clients.add_socket(key, limits.client, 0);
        assert_eq!((0..100).filter(|_| clients.try_frame(key, limits.client, 0)).count(), 60);
        clients.remove_socket(key);
        clients.remove_socket(key);
        clients.add_socket(key, limits.client, 0);
        assert!(!clients.try_frame(key, limits.client, 0), "a reconnect does not refill the budget");
        assert_eq!((0..100).filter(|_| clients.try_frame(key, limits.client, 1_000)).count(), 15);
    }

    #[test]
    fn joins_are_counted_per_client() {
        let limits = RoomLimits::default();
        let mut clients = Clients::default();
        let (a, b) = (ClientKey::of("a", [0, 0]), ClientKey::of("b", [0, 0]));
        assert_eq!((0..50).filter(|_| clients.try_join(a, &limits, 0)).count(), 10);
        assert!(clients.try_join(b, &limits, 0));
        assert!(clients.try_join(a, &limits, 20_000));
    }

    #[test]
    fn idle_clients_are_forgotten_only_once_nothing_would_change() {
        let limits = RoomLimits::default();
        let mut clients = Clients::default();
        let busy = ClientKey::of("busy", [0, 0]);
        clients.add_socket(busy, limits.client, 0);
        for i in 0..SWEEP_ABOVE {
            clients.try_join(ClientKey::of(&i.to_string(), [0, 0]), &limits, 0);
        }
        assert_eq!(clients.len(), SWEEP_ABOVE + 1, "recent joins are remembered");
        clients.try_join(ClientKey::of("late", [0, 0]), &limits, 60_000);
        assert_eq!(clients.len(), 2, "the busy client and the newcomer");
    }
}
