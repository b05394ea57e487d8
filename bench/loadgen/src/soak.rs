//! The soak of issue 5: many sockets over many rooms with steady traffic for minutes, every
//! client dropped and reconnected at once half way (each after a random delay, asking for
//! what it missed with `since`), then a check that every acknowledged message reached every
//! member of its room exactly once, live or through the welcome's history.
//!
//! A message is acknowledged when its sender sees it come back with an id. The clients here
//! read whole frames (serde_json): the traffic is light, and the check needs ids and texts.

use crate::client;
use crate::report::{Better::*, Outcome};
use crate::scenarios::Bench;
use crate::target::{Server, Target};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

#[derive(Default)]
struct Member {
    /// Every message id this member received, live or in a welcome's history.
    received: HashSet<u64>,
    duplicates: u64,
    last_id: u64,
    connected: bool,
    errors: BTreeMap<String, u64>,
}

struct RoomLog {
    acked: Mutex<HashSet<u64>>,
}

/// A member's state, and the channel that tells its task what to do.
type Handle = (Arc<Mutex<Member>>, mpsc::UnboundedSender<Command>);

enum Command {
    Say,
    /// Drop the connection without a close frame, wait, and come back.
    Drop(Duration),
    Close,
}

fn count(errors: &mut BTreeMap<String, u64>, what: impl Into<String>) {
    *errors.entry(what.into()).or_default() += 1;
}

pub async fn soak(bench: &Bench<'_>, target: &Target) -> Result<Outcome, String> {
    let plan = &bench.plan.soak;
    let server = bench.start(target).await?;
    let started = Instant::now();
    let mut members: Vec<Vec<Handle>> = Vec::new();
    let mut logs = Vec::new();
    let mut tasks = Vec::new();
    for r in 0..plan.rooms {
        let log = Arc::new(RoomLog { acked: Mutex::new(HashSet::new()) });
        let mut room_members = Vec::new();
        for m in 0..plan.per_room {
            let member = Arc::new(Mutex::new(Member::default()));
            let (commands, inbox) = mpsc::unbounded_channel();
            let url = server.ws_url(&format!("/chat/soak{r}"));
            tasks.push(tokio::spawn(run(url, m, member.clone(), log.clone(), inbox)));
            room_members.push((member, commands));
        }
        members.push(room_members);
        logs.push(log);
    }
    let everyone = || members.iter().flatten();
    let all_connected =
        |members: &[Vec<Handle>]| members.iter().flatten().all(|(m, _)| m.lock().expect("member").connected);
    if !wait(Duration::from_secs(120), || all_connected(&members)).await {
        return Err("not every soak client could join".into());
    }
    let rss_before = server.usage().rss_kb;

    // Steady traffic: each room's members take turns at the room's rate.
    let period = Duration::from_secs_f64(1.0 / plan.rate);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut sent, mut skipped, mut turn) = (0u64, 0u64, 0usize);
    let mut rss_peak = rss_before;
    let mut stormed = false;
    let mut random = Xorshift(started.elapsed().as_nanos() as u64 | 1);
    let traffic_started = Instant::now();
    let mut last_sample = Instant::now();
    while traffic_started.elapsed() < plan.duration {
        tick.tick().await;
        for room in &members {
            let (member, commands) = &room[turn % room.len()];
            if member.lock().expect("member").connected {
                let _ = commands.send(Command::Say);
                sent += 1;
            } else {
                skipped += 1;
            }
        }
        turn += 1;
        if !stormed && traffic_started.elapsed() >= plan.duration / 2 {
            stormed = true;
            for (_, commands) in everyone() {
                let jitter = Duration::from_micros(random.next() % plan.jitter.as_micros().max(1) as u64);
                let _ = commands.send(Command::Drop(jitter));
            }
        }
        if last_sample.elapsed() >= Duration::from_secs(1) {
            rss_peak = rss_peak.max(server.usage().rss_kb);
            last_sample = Instant::now();
        }
    }

    // Every acknowledged message must reach every member of its room.
    let missing = || -> u64 {
        members
            .iter()
            .zip(&logs)
            .map(|(room, log)| {
                let acked = log.acked.lock().expect("log");
                room.iter()
                    .map(|(m, _)| {
                        let m = m.lock().expect("member");
                        acked.iter().filter(|id| !m.received.contains(id)).count() as u64
                    })
                    .sum::<u64>()
            })
            .sum()
    };
    let settled = wait(Duration::from_secs(60), || all_connected(&members) && missing() == 0).await;
    let rss_after_traffic = server.usage().rss_kb;
    let acked: u64 = logs.iter().map(|l| l.acked.lock().expect("log").len() as u64).sum();
    let expected = acked * plan.per_room as u64;
    let owed = missing();
    let mut errors = BTreeMap::new();
    let mut duplicates = 0;
    for (member, _) in everyone() {
        let m = member.lock().expect("member");
        duplicates += m.duplicates;
        for (what, n) in &m.errors {
            *errors.entry(what.clone()).or_insert(0u64) += n;
        }
    }

    for (_, commands) in everyone() {
        let _ = commands.send(Command::Close);
    }
    let closed =
        tokio::time::timeout(Duration::from_secs(60), futures_util::future::join_all(tasks.iter_mut())).await.is_ok();
    tasks.iter().for_each(|task| task.abort());
    let mut emptied = closed;
    for r in 0..plan.rooms {
        emptied &= wait_empty(&server, &format!("soak{r}")).await;
    }
    let rss_after_close = server.usage().rss_kb;

    let mb = |kb: u64| kb as f64 / 1024.0;
    let mut out = Outcome::default();
    out.add("sent", "messages sent", "", Neither, sent as f64);
    out.add("acked", "messages acknowledged (echoed with an id)", "", Neither, acked as f64);
    out.add("expected", "deliveries owed for acknowledged messages", "", Neither, expected as f64);
    out.add("delivered", "of those, delivered (live or in history)", "", Higher, (expected - owed) as f64);
    out.add("missing", "missing deliveries", "", Lower, owed as f64);
    out.add("duplicates", "duplicate deliveries", "", Lower, duplicates as f64);
    out.add("skipped", "sends skipped while the sender was away", "", Neither, skipped as f64);
    out.add("errors", "errors (frames, closes, failed connects)", "", Lower, errors.values().sum::<u64>() as f64);
    out.add("rss_before_mb", "resident before traffic", "MB", Lower, mb(rss_before));
    out.add("rss_peak_mb", "resident peak during traffic", "MB", Lower, mb(rss_peak));
    out.add("rss_end_mb", "resident after traffic, still connected", "MB", Lower, mb(rss_after_traffic));
    out.add("rss_closed_mb", "resident after every socket closed", "MB", Lower, mb(rss_after_close));
    for (what, n) in &errors {
        out.note(format!("{n} × {what}"));
    }
    if !settled {
        out.note("deliveries still missing after 60 s");
    }
    if !emptied {
        out.note("rooms not empty after every client closed");
    }
    drop(server);
    Ok(out)
}

/// One soak client: joins, reconnects with `since` after every drop, and closes when told.
async fn run(
    url: String,
    number: usize,
    member: Arc<Mutex<Member>>,
    log: Arc<RoomLog>,
    mut inbox: mpsc::UnboundedReceiver<Command>,
) {
    let mut seq = 0u64;
    loop {
        let last_id = member.lock().expect("member").last_id;
        let url = if last_id > 0 { format!("{url}?since={last_id}") } else { url.clone() };
        let socket = match client::connect(&url, false).await {
            Ok(socket) => socket,
            Err(error) => {
                count(&mut member.lock().expect("member").errors, format!("connect failed: {error}"));
                if inbox.is_closed() {
                    return;
                }
                // A refused reconnect is retried, as a real client would, but never in a tight loop.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (mut sink, mut stream) = socket.split();
        let mut welcomed = false;
        let ended_by = loop {
            tokio::select! {
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        let mut m = member.lock().expect("member");
                        read(&mut m, number, &log, text.as_str());
                        if !welcomed {
                            welcomed = true;
                            m.connected = true;
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                    Some(Ok(_)) => {}
                },
                command = inbox.recv() => match command {
                    Some(Command::Say) => {
                        seq += 1;
                        let frame = format!("{{\"type\":\"message\",\"text\":\"{number} {seq} soak traffic\"}}");
                        if sink.send(Message::text(frame)).await.is_err() {
                            break None;
                        }
                    }
                    Some(Command::Drop(after)) => break Some(after),
                    Some(Command::Close) | None => {
                        member.lock().expect("member").connected = false;
                        let _ = sink.send(Message::Close(None)).await;
                        let drained = async { while let Some(Ok(_)) = stream.next().await {} };
                        let _ = tokio::time::timeout(Duration::from_secs(10), drained).await;
                        return;
                    }
                },
            }
        };
        member.lock().expect("member").connected = false;
        match ended_by {
            Some(after) => {
                // Dropped like a lost network: no close frame, the server finds out by itself.
                drop((sink, stream));
                tokio::time::sleep(after).await;
            }
            None => count(&mut member.lock().expect("member").errors, "connection ended by the server"),
        }
    }
}

fn read(member: &mut Member, number: usize, log: &RoomLog, text: &str) {
    let Ok(frame) = serde_json::from_str::<Value>(text) else { return };
    let mut record = |message: &Value| {
        let (Some(id), Some(body)) = (message["id"].as_u64(), message["text"].as_str()) else { return };
        if !member.received.insert(id) {
            member.duplicates += 1;
        }
        member.last_id = member.last_id.max(id);
        if body.split(' ').next() == Some(number.to_string().as_str()) {
            log.acked.lock().expect("log").insert(id);
        }
    };
    match frame["type"].as_str() {
        Some("message") => record(&frame),
        Some("welcome") => frame["history"].as_array().into_iter().flatten().for_each(record),
        Some("error") => count(&mut member.errors, format!("error frame {}", frame["code"])),
        _ => {}
    }
}

/// Polls `done` every 50 ms for at most `limit`.
async fn wait(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

async fn wait_empty(server: &Server, room: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client::member_count(server.port, room).await == Ok(0) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Jitter for the reconnect storm; no cryptographic needs.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
