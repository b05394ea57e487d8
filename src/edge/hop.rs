//! How a `Route` crosses from the Worker to the room's object, in a request header: a tag and
//! then the variant's fields in a fixed order (see `chat::fields`). Written out rather than
//! derived with serde: JSON decoders for every variant cost the WASM module about 40 KB.

use crate::chat::fields::{Reader, Writer};
use crate::chat::history::Window;
use crate::chat::moderation::Action;
use crate::chat::sse::Post;
use crate::edge::routes::{EngineRequest, Joining, Route, Transport};

impl Route {
    pub fn to_hop(&self) -> String {
        let mut hop = Writer::default();
        match self {
            Route::Health => hop.tag("health"),
            Route::Preflight => hop.tag("preflight"),
            Route::Join { joining, socketio } => {
                write_joining(hop.tag("join"), joining);
                match socketio {
                    None => hop.absent(),
                    Some(EngineRequest { transport, sid, post }) => {
                        let transport = match transport {
                            Transport::Websocket => "websocket",
                            Transport::Polling => "polling",
                        };
                        hop.present().tag(transport).optional_text(sid.as_deref()).tag(if *post { "post" } else { "get" })
                    }
                }
            }
            Route::Events { joining } => write_joining(hop.tag("events"), joining),
            Route::Post { room, post: Post::Message } => hop.tag("message").text(room),
            Route::Post { room, post: Post::Nick } => hop.tag("nick").text(room),
            Route::StreamGone { stream } => hop.tag("gone").text(stream),
            Route::Users { room } => hop.tag("users").text(room),
            Route::History { room, window } => {
                let hop = hop.tag("history").text(room);
                match *window {
                    Window::Latest { limit } => hop.tag("latest").number(limit.into()),
                    Window::After { since, limit } => hop.tag("after").number(since).number(limit.into()),
                    Window::Before { before, limit } => hop.tag("before").number(before).number(limit.into()),
                    Window::Changed { after, limit } => hop.tag("changed").number(after).number(limit.into()),
                }
            }
            Route::AdminAction { room } => hop.tag("admin").text(room),
            Route::Moderate { room, action } => {
                let hop = hop.tag("moderate").text(room).tag(action.name());
                match action {
                    Action::Delete { id } => hop.number(*id),
                    Action::Kick { nick } | Action::Unban { nick } => hop.text(nick),
                    Action::Ban { nick, duration_s } => hop.text(nick).optional_number(*duration_s),
                    Action::Mute { nick, duration_s } => hop.text(nick).number(*duration_s),
                    Action::Slow { seconds } => hop.number(*seconds),
                    Action::Clear => hop,
                }
            }
            Route::Bans { room } => hop.tag("bans").text(room),
            Route::Audit { room } => hop.tag("audit").text(room),
        };
        hop.finish()
    }

    /// The route `to_hop` wrote, or `None` for anything it could not have written.
    pub fn from_hop(hop: &str) -> Option<Route> {
        let mut fields = Reader::new(hop);
        let route = match fields.next()? {
            "health" => Route::Health,
            "preflight" => Route::Preflight,
            "join" => Route::Join {
                joining: read_joining(&mut fields)?,
                socketio: match fields.group()? {
                    false => None,
                    true => Some(EngineRequest {
                        transport: match fields.next()? {
                            "websocket" => Transport::Websocket,
                            "polling" => Transport::Polling,
                            _ => return None,
                        },
                        sid: fields.optional_text()?,
                        post: match fields.next()? {
                            "post" => true,
                            "get" => false,
                            _ => return None,
                        },
                    }),
                },
            },
            "events" => Route::Events { joining: read_joining(&mut fields)? },
            "message" => Route::Post { room: fields.text()?, post: Post::Message },
            "nick" => Route::Post { room: fields.text()?, post: Post::Nick },
            "gone" => Route::StreamGone { stream: fields.text()? },
            "users" => Route::Users { room: fields.text()? },
            "history" => {
                let room = fields.text()?;
                let window = match fields.next()? {
                    "latest" => Window::Latest { limit: fields.limit()? },
                    "after" => Window::After { since: fields.number()?, limit: fields.limit()? },
                    "before" => Window::Before { before: fields.number()?, limit: fields.limit()? },
                    "changed" => Window::Changed { after: fields.number()?, limit: fields.limit()? },
                    _ => return None,
                };
                Route::History { room, window }
            }
            "admin" => Route::AdminAction { room: fields.text()? },
            "moderate" => {
                let room = fields.text()?;
                let action = match fields.next()? {
                    "delete" => Action::Delete { id: fields.number()? },
                    "kick" => Action::Kick { nick: fields.text()? },
                    "ban" => Action::Ban { nick: fields.text()?, duration_s: fields.optional_number()? },
                    "unban" => Action::Unban { nick: fields.text()? },
                    "mute" => Action::Mute { nick: fields.text()?, duration_s: fields.number()? },
                    "slow" => Action::Slow { seconds: fields.number()? },
                    "clear" => Action::Clear,
                    _ => return None,
                };
                Route::Moderate { room, action }
            }
            "bans" => Route::Bans { room: fields.text()? },
            "audit" => Route::Audit { room: fields.text()? },
            _ => return None,
        };
        fields.finished().then_some(route)
    }
}

/// A join's fields, the same in a `join` hop and an `events` hop.
fn write_joining<'w>(hop: &'w mut Writer, joining: &Joining) -> &'w mut Writer {
    let Joining { room, nick, since, after, client_id, client, identity } = joining;
    hop.text(room).optional_text(nick.as_deref()).optional_number(*since).optional_number(*after);
    hop.optional_text(client_id.as_deref()).text(client).identity(identity.as_ref())
}

fn read_joining(fields: &mut Reader<'_>) -> Option<Joining> {
    Some(Joining {
        room: fields.text()?,
        nick: fields.optional_text()?,
        since: fields.optional_number()?,
        after: fields.optional_number()?,
        client_id: fields.optional_text()?,
        client: fields.text()?,
        identity: fields.identity()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::identity::{Identity, Role};

    fn join(nick: Option<&str>, identity: Option<Identity>, socketio: Option<EngineRequest>) -> Route {
        let joining = Joining {
            room: "lobby".into(),
            nick: nick.map(Into::into),
            since: Some(7),
            after: None,
            client_id: Some("c-1".into()),
            client: "2001:db8::1".into(),
            identity,
        };
        Route::Join { joining, socketio }
    }

    fn every_route() -> Vec<Route> {
        let ann = Identity { id: "u,1 %~+".into(), name: "Ann".into(), role: Role::Moderator, expires_at: u64::MAX };
        let engine = |transport, sid: Option<&str>, post| Some(EngineRequest { transport, sid: sid.map(Into::into), post });
        let mut routes = vec![
            Route::Health,
            Route::Preflight,
            join(None, None, None),
            join(Some(""), None, None),
            join(Some("Ann, the \"first\" ~ 100% +1\n\t é 日本 🎉"), Some(ann.clone()), None),
            join(Some("~"), None, engine(Transport::Websocket, None, false)),
            join(Some("+"), None, engine(Transport::Polling, Some("s1"), true)),
            join(Some(" Bo "), Some(Identity { role: Role::Readonly, ..ann.clone() }), engine(Transport::Polling, None, false)),
            Route::Events {
                joining: Joining {
                    room: "r".into(),
                    nick: None,
                    since: None,
                    after: Some(0),
                    client_id: None,
                    client: String::new(),
                    identity: Some(Identity { role: Role::Member, ..ann }),
                },
            },
            Route::Post { room: "r".into(), post: Post::Message },
            Route::Post { room: "r".into(), post: Post::Nick },
            Route::StreamGone { stream: "abc".into() },
            Route::Users { room: "a.b-c_d".into() },
            Route::AdminAction { room: "r".into() },
            Route::Bans { room: "r".into() },
            Route::Audit { room: "r".into() },
        ];
        for window in [
            Window::Latest { limit: 1 },
            Window::After { since: 3, limit: 100 },
            Window::Before { before: u64::MAX, limit: 50 },
            Window::Changed { after: 0, limit: u32::MAX },
        ] {
            routes.push(Route::History { room: "r".into(), window });
        }
        for action in [
            Action::Delete { id: 9 },
            Action::Kick { nick: "Ann,".into() },
            Action::Ban { nick: "Ann".into(), duration_s: None },
            Action::Ban { nick: "".into(), duration_s: Some(60) },
            Action::Unban { nick: "Ann".into() },
            Action::Mute { nick: "Ann".into(), duration_s: 5 },
            Action::Slow { seconds: 0 },
            Action::Clear,
        ] {
            routes.push(Route::Moderate { room: "r".into(), action });
        }
        routes
    }

    #[test]
    fn every_route_crosses_unchanged_as_a_valid_header_value() {
        for route in every_route() {
            let hop = route.to_hop();
            assert!(hop.bytes().all(|b| b.is_ascii_graphic()), "{hop}");
            assert_eq!(Route::from_hop(&hop), Some(route), "{hop}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for hop in [
            "",
            "join",
            "users",
            "users,r,extra",
            "users,%zz",
            "users,%FF",
            "users,~",
            "history,r,latest,4294967296",
            "history,r,sideways,1",
            "history,r,after,-1,5",
            "moderate,r,shout,x",
            "join,lobby,~,~,~,~,1.2.3.4,~,+,carrier,~,get",
            "join,lobby,~,~,~,~,1.2.3.4,+,u,n,admin,1,~",
            "{\"Users\":{\"room\":\"r\"}}",
        ] {
            assert_eq!(Route::from_hop(hop), None, "{hop}");
        }
    }
}
