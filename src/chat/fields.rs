//! A fixed text encoding for what the module hands itself: a route from the Worker to the
//! room's object (`edge::hop`), a socket's attachment through hibernation (`outbox`). Fields
//! in a fixed order, separated by commas, each percent-encoded (so a field holds no comma and
//! the whole is a valid header value), `~` for an absent field and `+` before an optional group
//! of fields that is present. Written out rather than derived with serde, whose decoders cost
//! the WASM module far more than this.

use crate::chat::identity::{Identity, Role};
use crate::edge::routes::percent_decode;

const ABSENT: &str = "~";
const PRESENT: &str = "+";

/// Writes fields in order.
#[derive(Default)]
pub struct Writer(String);

impl Writer {
    /// A field that is one of a few fixed words, written as it is.
    pub fn tag(&mut self, word: &str) -> &mut Writer {
        if !self.0.is_empty() {
            self.0.push(',');
        }
        self.0.push_str(word);
        self
    }

    pub fn absent(&mut self) -> &mut Writer {
        self.tag(ABSENT)
    }

    pub fn present(&mut self) -> &mut Writer {
        self.tag(PRESENT)
    }

    pub fn text(&mut self, text: &str) -> &mut Writer {
        self.tag("");
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') {
                self.0.push(char::from(byte));
            } else {
                let hex = |nibble: u8| char::from(b"0123456789ABCDEF"[usize::from(nibble)]);
                self.0.extend(['%', hex(byte >> 4), hex(byte & 15)]);
            }
        }
        self
    }

    pub fn optional_text(&mut self, text: Option<&str>) -> &mut Writer {
        match text {
            Some(text) => self.text(text),
            None => self.absent(),
        }
    }

    pub fn number(&mut self, number: u64) -> &mut Writer {
        self.tag(&number.to_string())
    }

    pub fn optional_number(&mut self, number: Option<u64>) -> &mut Writer {
        match number {
            Some(number) => self.number(number),
            None => self.absent(),
        }
    }

    pub fn flag(&mut self, flag: bool) -> &mut Writer {
        self.tag(if flag { "1" } else { "0" })
    }

    pub fn identity(&mut self, identity: Option<&Identity>) -> &mut Writer {
        let Some(Identity { id, name, role, expires_at }) = identity else { return self.absent() };
        let role = match role {
            Role::Member => "member",
            Role::Moderator => "moderator",
            Role::Readonly => "readonly",
        };
        self.present().text(id).text(name).tag(role).number(*expires_at)
    }

    pub fn finish(self) -> String {
        self.0
    }
}

/// Reads fields in the order a `Writer` wrote them. Each reader gives `None` when the
/// field is missing or malformed.
pub struct Reader<'a>(std::str::Split<'a, char>);

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Reader<'a> {
        Reader(text.split(','))
    }

    /// The next field as it is: for tags.
    pub fn next(&mut self) -> Option<&'a str> {
        self.0.next()
    }

    /// Whether an optional group of fields follows.
    pub fn group(&mut self) -> Option<bool> {
        match self.next()? {
            ABSENT => Some(false),
            PRESENT => Some(true),
            _ => None,
        }
    }

    pub fn text(&mut self) -> Option<String> {
        self.optional_text()?
    }

    pub fn optional_text(&mut self) -> Option<Option<String>> {
        match self.next()? {
            ABSENT => Some(None),
            field => percent_decode(field).map(Some),
        }
    }

    pub fn number(&mut self) -> Option<u64> {
        self.optional_number()?
    }

    pub fn optional_number(&mut self) -> Option<Option<u64>> {
        match self.next()? {
            ABSENT => Some(None),
            field => field.parse().ok().map(Some),
        }
    }

    pub fn flag(&mut self) -> Option<bool> {
        match self.next()? {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        }
    }

    pub fn limit(&mut self) -> Option<u32> {
        self.number()?.try_into().ok()
    }

    pub fn identity(&mut self) -> Option<Option<Identity>> {
        if !self.group()? {
            return Some(None);
        }
        let (id, name) = (self.text()?, self.text()?);
        let role = Role::parse(self.next()?)?;
        Some(Some(Identity { id, name, role, expires_at: self.number()? }))
    }

    /// Whether every field was read.
    pub fn finished(&mut self) -> bool {
        self.next().is_none()
    }
}
