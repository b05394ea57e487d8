//! Nicknames: which ones a user may ask for, and the random ones (`QuiteBraveDragon`) the
//! room hands out when a user asks for none or for one that is taken. Uniqueness within a
//! room is the room's job; here a nick's `key` says which nicks count as the same.

use crate::chat::protocol::ErrorCode;

pub const MAX_NICK_CHARS: usize = 32;

const INTENSIFIERS: [&str; 12] = [
    "Quite", "Very", "Truly", "Rather", "Really", "Mostly", "Wildly", "Awfully", "Fairly", "Simply", "Utterly", "Super",
];
const ADJECTIVES: [&str; 32] = [
    "Brave", "Calm", "Clever", "Cosy", "Curious", "Daring", "Eager", "Fancy", "Gentle", "Gleeful", "Happy", "Jolly",
    "Kind", "Lively", "Lucky", "Merry", "Mighty", "Nimble", "Noble", "Plucky", "Proud", "Quick", "Quiet", "Shiny",
    "Silly", "Sleepy", "Snappy", "Sunny", "Swift", "Witty", "Zany", "Zesty",
];
const CREATURES: [&str; 32] = [
    "Badger", "Beaver", "Dragon", "Falcon", "Ferret", "Gecko", "Griffin", "Hedgehog", "Heron", "Ibis", "Koala", "Lemur",
    "Lynx", "Marmot", "Narwhal", "Ocelot", "Otter", "Owl", "Panda", "Pelican", "Phoenix", "Puffin", "Quokka", "Raven",
    "Salamander", "Sloth", "Sphinx", "Tapir", "Unicorn", "Walrus", "Wombat", "Yak",
];

/// Checks a nick a user asked for: 1 to 32 letters, digits, `_`, `-` or `.`.
pub fn validate_nick(nick: &str) -> Result<&str, ErrorCode> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if nick.is_empty() || nick.len() > MAX_NICK_CHARS || !nick.chars().all(allowed) {
        return Err(ErrorCode::BadNick);
    }
    Ok(nick)
}

/// Nicks are unique case-insensitively: `Ann` and `ann` are the same person.
pub fn key(nick: &str) -> String {
    nick.to_ascii_lowercase()
}

/// A random nick from 64 bits of entropy: an optional intensifier, an adjective and a creature.
pub fn random_nick(entropy: u64) -> String {
    let pick = |list: &[&'static str], shift: u32| list[((entropy >> shift) % list.len() as u64) as usize];
    // One draw in four has no intensifier, so plain `BraveDragon`s appear too.
    let intensifier = if (entropy >> 48) % 4 == 0 { "" } else { pick(&INTENSIFIERS, 32) };
    format!("{intensifier}{}{}", pick(&ADJECTIVES, 0), pick(&CREATURES, 16))
}

/// A random nick that `is_taken` refuses. After a few collisions a number is added and
/// counted up, which ends the search however poor the entropy: a room holds finitely many nicks.
pub fn unused_random_nick(mut entropy: impl FnMut() -> u64, is_taken: impl Fn(&str) -> bool) -> String {
    for _ in 0..16 {
        let nick = random_nick(entropy());
        if !is_taken(&nick) {
            return nick;
        }
    }
    let base = random_nick(entropy());
    (2u32..).map(|n| format!("{base}{n}")).find(|nick| !is_taken(nick)).expect("some number is free")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn requested_nicks_follow_the_rule() {
        for good in ["a", "Ann", "x_y-z.1", &"n".repeat(32)] {
            assert_eq!(validate_nick(good), Ok(good));
        }
        for bad in ["", " ", "has space", "émile", "a/b", "<b>", "a\r\nSet-Cookie:x", &"n".repeat(33)] {
            assert_eq!(validate_nick(bad), Err(ErrorCode::BadNick), "{bad:?}");
        }
    }

    #[test]
    fn random_nicks_look_like_quite_brave_dragon() {
        let nick = random_nick((0x1_0008 << 32) | (2 << 16));
        assert_eq!(nick, "QuiteBraveDragon");
        assert_eq!(random_nick(2 << 16), "BraveDragon");
        for seed in [1u64, 99, u64::MAX, 0xdead_beef_cafe] {
            let nick = random_nick(seed);
            assert!(validate_nick(&nick).is_ok(), "{nick}");
            assert!(nick.chars().next().unwrap().is_ascii_uppercase());
        }
    }

    #[test]
    fn random_nicks_vary() {
        let mut state = 1u64;
        let distinct: HashSet<String> = (0..200)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                random_nick(state)
            })
            .collect();
        assert!(distinct.len() > 150, "only {} distinct", distinct.len());
    }

    #[test]
    fn unused_random_nick_avoids_taken_ones_even_when_entropy_repeats() {
        let base = random_nick(7);
        let taken = |n: &str| n == base || n == format!("{base}2");
        let nick = unused_random_nick(|| 7, taken);
        assert_eq!(nick, format!("{base}3"));
        assert!(validate_nick(&nick).is_ok());
    }

    #[test]
    fn keys_ignore_case() {
        assert_eq!(key("Ann"), key("aNN"));
        assert_ne!(key("Ann"), key("Anna"));
    }
}
