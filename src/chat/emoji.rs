//! Whether a reaction is one emoji: a compact check over the emoji code points rather than a
//! grapheme-segmentation crate, whose tables would cost the WASM module more than this whole
//! file. It accepts exactly the emoji shapes Unicode defines (UTS #51): one pictograph with an
//! optional presentation selector, skin-tone modifier or tag sequence; several of those
//! joined by ZWJ; a flag (two regional indicators); a keycap. Each of those is one extended
//! grapheme cluster (the tests check that against `unicode-segmentation`).

/// Longest reaction, in UTF-8 bytes.
pub const MAX_EMOJI_BYTES: usize = 32;

const ZWJ: char = '\u{200D}';
const TEXT_STYLE: char = '\u{FE0E}';
const EMOJI_STYLE: char = '\u{FE0F}';
const KEYCAP: char = '\u{20E3}';
const CANCEL_TAG: char = '\u{E007F}';

/// Whether `text` is exactly one emoji of at most `MAX_EMOJI_BYTES`.
pub fn is_one_emoji(text: &str) -> bool {
    if text.is_empty() || text.len() > MAX_EMOJI_BYTES {
        return false;
    }
    let chars: Vec<char> = text.chars().collect();
    match chars.as_slice() {
        [a, b] if is_regional_indicator(*a) && is_regional_indicator(*b) => true,
        [base, EMOJI_STYLE, KEYCAP] | [base, KEYCAP] => matches!(base, '0'..='9' | '#' | '*'),
        _ => chars.split(|&c| c == ZWJ).all(is_element),
    }
}

/// One pictograph, then at most one presentation selector, skin-tone modifier and tag sequence.
fn is_element(chars: &[char]) -> bool {
    let Some((&base, mut rest)) = chars.split_first() else { return false };
    if !is_pictographic(base) {
        return false;
    }
    if let [TEXT_STYLE | EMOJI_STYLE, tail @ ..] = rest {
        rest = tail;
    }
    if let [modifier, tail @ ..] = rest {
        if is_skin_tone(*modifier) {
            rest = tail;
        }
    }
    match rest {
        [] => true,
        [tags @ .., CANCEL_TAG] => !tags.is_empty() && tags.iter().all(|&c| ('\u{E0020}'..='\u{E007E}').contains(&c)),
        _ => false,
    }
}

fn is_regional_indicator(c: char) -> bool {
    ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)
}

fn is_skin_tone(c: char) -> bool {
    ('\u{1F3FB}'..='\u{1F3FF}').contains(&c)
}

fn is_pictographic(c: char) -> bool {
    let c = c as u32;
    EXTENDED_PICTOGRAPHIC
        .binary_search_by(|&(start, end)| {
            if end < c {
                std::cmp::Ordering::Less
            } else if start > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Unicode 17's Extended_Pictographic code points (emoji-data.txt), as inclusive ranges.
const EXTENDED_PICTOGRAPHIC: [(u32, u32); 156] = [
    (0xA9, 0xA9), (0xAE, 0xAE), (0x203C, 0x203C), (0x2049, 0x2049), (0x2122, 0x2122), (0x2139, 0x2139),
    (0x2194, 0x2199), (0x21A9, 0x21AA), (0x231A, 0x231B), (0x2328, 0x2328), (0x23CF, 0x23CF), (0x23E9, 0x23F3),
    (0x23F8, 0x23FA), (0x24C2, 0x24C2), (0x25AA, 0x25AB), (0x25B6, 0x25B6), (0x25C0, 0x25C0), (0x25FB, 0x25FE),
    (0x2600, 0x2604), (0x260E, 0x260E), (0x2611, 0x2611), (0x2614, 0x2615), (0x2618, 0x2618), (0x261D, 0x261D),
    (0x2620, 0x2620), (0x2622, 0x2623), (0x2626, 0x2626), (0x262A, 0x262A), (0x262E, 0x262F), (0x2638, 0x263A),
    (0x2640, 0x2640), (0x2642, 0x2642), (0x2648, 0x2653), (0x265F, 0x2660), (0x2663, 0x2663), (0x2665, 0x2666),
    (0x2668, 0x2668), (0x267B, 0x267B), (0x267E, 0x267F), (0x2692, 0x2697), (0x2699, 0x2699), (0x269B, 0x269C),
    (0x26A0, 0x26A1), (0x26A7, 0x26A7), (0x26AA, 0x26AB), (0x26B0, 0x26B1), (0x26BD, 0x26BE), (0x26C4, 0x26C5),
    (0x26C8, 0x26C8), (0x26CE, 0x26CF), (0x26D1, 0x26D1), (0x26D3, 0x26D4), (0x26E9, 0x26EA), (0x26F0, 0x26F5),
    (0x26F7, 0x26FA), (0x26FD, 0x26FD), (0x2702, 0x2702), (0x2705, 0x2705), (0x2708, 0x270D), (0x270F, 0x270F),
    (0x2712, 0x2712), (0x2714, 0x2714), (0x2716, 0x2716), (0x271D, 0x271D), (0x2721, 0x2721), (0x2728, 0x2728),
    (0x2733, 0x2734), (0x2744, 0x2744), (0x2747, 0x2747), (0x274C, 0x274C), (0x274E, 0x274E), (0x2753, 0x2755),
    (0x2757, 0x2757), (0x2763, 0x2764), (0x2795, 0x2797), (0x27A1, 0x27A1), (0x27B0, 0x27B0), (0x27BF, 0x27BF),
    (0x2934, 0x2935), (0x2B05, 0x2B07), (0x2B1B, 0x2B1C), (0x2B50, 0x2B50), (0x2B55, 0x2B55), (0x3030, 0x3030),
    (0x303D, 0x303D), (0x3297, 0x3297), (0x3299, 0x3299), (0x1F004, 0x1F004), (0x1F02C, 0x1F02F), (0x1F094, 0x1F09F),
    (0x1F0AF, 0x1F0B0), (0x1F0C0, 0x1F0C0), (0x1F0CF, 0x1F0D0), (0x1F0F6, 0x1F0FF), (0x1F170, 0x1F171),
    (0x1F17E, 0x1F17F), (0x1F18E, 0x1F18E), (0x1F191, 0x1F19A), (0x1F1AE, 0x1F1E5), (0x1F201, 0x1F20F),
    (0x1F21A, 0x1F21A), (0x1F22F, 0x1F22F), (0x1F232, 0x1F23A), (0x1F23C, 0x1F23F), (0x1F249, 0x1F25F),
    (0x1F266, 0x1F321), (0x1F324, 0x1F393), (0x1F396, 0x1F397), (0x1F399, 0x1F39B), (0x1F39E, 0x1F3F0),
    (0x1F3F3, 0x1F3F5), (0x1F3F7, 0x1F3FA), (0x1F400, 0x1F4FD), (0x1F4FF, 0x1F53D), (0x1F549, 0x1F54E),
    (0x1F550, 0x1F567), (0x1F56F, 0x1F570), (0x1F573, 0x1F57A), (0x1F587, 0x1F587), (0x1F58A, 0x1F58D),
    (0x1F590, 0x1F590), (0x1F595, 0x1F596), (0x1F5A4, 0x1F5A5), (0x1F5A8, 0x1F5A8), (0x1F5B1, 0x1F5B2),
    (0x1F5BC, 0x1F5BC), (0x1F5C2, 0x1F5C4), (0x1F5D1, 0x1F5D3), (0x1F5DC, 0x1F5DE), (0x1F5E1, 0x1F5E1),
    (0x1F5E3, 0x1F5E3), (0x1F5E8, 0x1F5E8), (0x1F5EF, 0x1F5EF), (0x1F5F3, 0x1F5F3), (0x1F5FA, 0x1F64F),
    (0x1F680, 0x1F6C5), (0x1F6CB, 0x1F6D2), (0x1F6D5, 0x1F6E5), (0x1F6E9, 0x1F6E9), (0x1F6EB, 0x1F6F0),
    (0x1F6F3, 0x1F6FF), (0x1F7DA, 0x1F7FF), (0x1F80C, 0x1F80F), (0x1F848, 0x1F84F), (0x1F85A, 0x1F85F),
    (0x1F888, 0x1F88F), (0x1F8AE, 0x1F8AF), (0x1F8BC, 0x1F8BF), (0x1F8C2, 0x1F8CF), (0x1F8D9, 0x1F8FF),
    (0x1F90C, 0x1F93A), (0x1F93C, 0x1F945), (0x1F947, 0x1F9FF), (0x1FA58, 0x1FA5F), (0x1FA6E, 0x1FAFF),
    (0x1FC00, 0x1FFFD),
];

#[cfg(test)]
mod tests {
    use super::*;
    use unicode_segmentation::UnicodeSegmentation;

    const EMOJI: [&str; 14] = [
        "👍", "❤️", "❤", "😂", "🎉", "👍🏽", "🇫🇷", "1️⃣", "#⃣", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🧑🏾‍💻", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "©️",
    ];

    #[test]
    fn emoji_of_every_shape_are_one_emoji_and_one_grapheme() {
        for emoji in EMOJI {
            assert!(is_one_emoji(emoji), "{emoji:?}");
            assert_eq!(emoji.graphemes(true).count(), 1, "{emoji:?}");
        }
    }

    #[test]
    fn anything_else_is_not() {
        for text in [
            "", "a", "1", "#", "ok", "👍👍", "👍 ", " 👍", "🇫", "🇫🇷🇩🇪", "👍\u{200D}", "\u{200D}👍", "🏽", "\u{FE0F}",
            "e\u{301}", "中", "<", "👍a", "1\u{FE0F}", "🏴\u{E0067}", "🏴\u{E007F}",
        ] {
            assert!(!is_one_emoji(text), "{text:?}");
        }
        let long = ["👨"; 9].join("\u{200D}");
        assert!(long.len() > MAX_EMOJI_BYTES && !is_one_emoji(&long), "over 32 bytes");
    }

    #[test]
    fn the_table_is_sorted_and_disjoint() {
        assert!(EXTENDED_PICTOGRAPHIC.windows(2).all(|w| w[0].1 < w[1].0 && w[0].0 <= w[0].1));
    }
}
