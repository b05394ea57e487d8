//! The scenarios of issue 4 (and the soak of issue 5), each on fresh runtimes with fresh
//! storage. The load scenarios (1 to 3) run every target at once and load them in turns
//! (`alternate`); the others run one target at a time, the targets taking turns when a
//! scenario is repeated. Either way a ratio compares measurements taken moments apart.

use crate::client::{self, now_us, Client, Command, Room};
use crate::report::{Better::*, Outcome};
use crate::target::{machine_busy_s, Perf, Runtime, Server, Target, Usage};
use futures_util::StreamExt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Vars that lift the room's limits, which would otherwise cap every throughput scenario: every
/// load-generator socket comes from one address, so the per-client and per-room budgets too. The
/// load generator's receivers never ping, so a section longer than the idle timeout (75 s) would
/// see them closed as idle (issue 10) midway.
const LIFTED: [(&str, &str); 9] = [
    ("RATE_BURST", "1000000000"),
    ("RATE_PER_SECOND", "1000000000"),
    ("CLIENT_BURST", "1000000000"),
    ("CLIENT_PER_SECOND", "1000000000"),
    ("ROOM_MESSAGES_PER_SECOND", "1000000000"),
    ("CLIENT_JOINS_PER_10S", "1000000000"),
    ("MAX_SOCKETS_PER_IP", "1000000000"),
    ("MAX_ROOM_SOCKETS", "32768"),
    ("IDLE_TIMEOUT_S", "86400"),
];

/// How long and how big each scenario is; `quick` shrinks everything for iterating.
pub struct Plan {
    /// Unmeasured load before a target's first slice.
    pub warmup: Duration,
    /// Slices per target, each `slice_warmup` of load then `slice` measured; the sections the
    /// issue sets targets on (fan-out at 100 clients, latency) take `key_slices`.
    pub slices: usize,
    pub key_slices: usize,
    pub slice_warmup: Duration,
    pub slice: Duration,
    pub fanout_senders: usize,
    /// Messages in flight (sent, not yet delivered to every member) across the senders.
    pub fanout_window: u64,
    pub latency_clients: usize,
    pub latency_senders: usize,
    pub latency_rate: f64,
    pub rooms: usize,
    pub room_size: usize,
    pub room_window: u64,
    /// Scenario 3d: saturated rooms beside the quiet one, and the quiet room's messages per second.
    pub quiet_busy_rooms: usize,
    pub quiet_rate: f64,
    pub storm: usize,
    pub idle_rooms: usize,
    pub idle_per_room: usize,
    pub base_per_room: usize,
    pub idle_cycles: usize,
    pub messages: u64,
    pub starts: usize,
    pub soak: SoakPlan,
}

pub struct SoakPlan {
    pub rooms: usize,
    pub per_room: usize,
    /// Messages per second per room.
    pub rate: f64,
    pub duration: Duration,
    /// The longest random delay before a dropped client reconnects.
    pub jitter: Duration,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        let secs = |full: f64, quick_s: f64| Duration::from_secs_f64(if quick { quick_s } else { full });
        let env_secs = |name: &str, default: Duration| {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).map_or(default, Duration::from_secs_f64)
        };
        let env_count = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
        Plan {
            warmup: secs(1.0, 0.5),
            slices: env_count("BENCH_SLICES", if quick { 3 } else { 8 }),
            key_slices: env_count("BENCH_SLICES", if quick { 4 } else { 24 }),
            slice_warmup: Duration::from_millis(250),
            slice: env_secs("BENCH_SLICE_S", Duration::from_secs(1)),
            fanout_senders: 4,
            fanout_window: 16,
            latency_clients: 100,
            latency_senders: 10,
            latency_rate: 100.0,
            rooms: 100,
            room_size: 10,
            room_window: 4,
            quiet_busy_rooms: 20,
            quiet_rate: 20.0,
            storm: 1000,
            idle_rooms: 10,
            idle_per_room: 100,
            base_per_room: 10,
            idle_cycles: 3,
            messages: env_count("BENCH_MESSAGES", if quick { 50_000 } else { 1_000_000 }) as u64,
            starts: if quick { 3 } else { 9 },
            soak: SoakPlan {
                rooms: 100,
                per_room: 10,
                rate: 2.0,
                duration: secs(240.0, 30.0),
                jitter: Duration::from_millis(1000),
            },
        }
    }
}

pub struct Bench<'a> {
    pub runtime: &'a Runtime,
    pub plan: &'a Plan,
}

impl Bench<'_> {
    pub async fn start(&self, target: &Target) -> Result<Server, String> {
        let lifted: Vec<(&str, String)> = LIFTED.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        let mut attempts = 0;
        loop {
            let mut server = Server::spawn(self.runtime, target, &lifted)?;
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                // The port was free when picked, but wrangler dev binds it seconds later, after its build,
                // while its own workerd processes take ports of their own: another pick may be taken by then.
                Err(error) if error.contains("Address already in use") && attempts < 3 => attempts += 1,
                Err(error) => return Err(error),
            }
        }
    }
}

/// Connects `count` clients numbered from `first` to room `name`, `batch` handshakes at a
/// time, and returns once every one has its welcome.
async fn join(server: &Server, name: &str, count: usize, first: usize, room: &Arc<Room>, batch: usize) -> Result<Vec<Client>, String> {
    let url = server.ws_url(&format!("/chat/{name}"));
    let socketio_url = server.ws_url(&format!("/socket.io/?EIO=4&transport=websocket&room={name}"));
    let mut clients = Vec::with_capacity(count);
    for start in (0..count).step_by(batch.max(1)) {
        let mut pending = Vec::new();
        for number in start..(start + batch).min(count) {
            let n = first + number;
            let (client, welcomed) = if room.socketio && n % 2 == 1 {
                client::spawn_socketio(format!("{socketio_url}&nick=c{n}"), n, room.clone())
            } else {
                client::spawn(format!("{url}?nick=c{n}"), n, room.clone())
            };
            clients.push(client);
            pending.push(welcomed);
        }
        for welcomed in pending {
            welcomed.await.map_err(|_| "a client task died".to_owned())??;
        }
    }
    Ok(clients)
}

/// Pings every client and waits for every pong: whatever the server had queued for them
/// before (joins, leaves) has then been read.
async fn settle(room: &Room, clients: &[Client]) -> Result<(), String> {
    let expected = room.pongs.load(Relaxed) + clients.len() as u64;
    for client in clients {
        client.send(Command::Ping);
    }
    if room.wait_until(Duration::from_secs(60), |r| r.pongs.load(Relaxed) >= expected).await {
        Ok(())
    } else {
        Err(format!("only {} of {expected} pongs came back", room.pongs.load(Relaxed)))
    }
}

/// Stops the runtime first (so that nobody announces a thousand leaves), then the clients.
fn finish(server: Server, clients: Vec<Client>) {
    drop(server);
    for client in clients {
        client.task.abort();
    }
}

/// Keeps `window` messages per member in flight in `room`, the senders taking turns, until
/// `limit` messages were sent or the task is aborted.
fn drive_window(room: Arc<Room>, senders: Vec<UnboundedSender<Command>>, window: u64, limit: u64) -> JoinHandle<()> {
    room.wake_below.store(window * room.size, Relaxed);
    tokio::spawn(async move {
        let mut turn = 0;
        while room.sent.load(Relaxed) < limit {
            let notified = room.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if room.outstanding() < window * room.size {
                let _ = senders[turn % senders.len()].send(Command::Say);
                room.sent.fetch_add(1, Relaxed);
                turn += 1;
            } else {
                notified.await;
            }
        }
    })
}

/// Sends `rate` messages per second into `room`, the senders taking turns, on a fixed
/// schedule that does not wait for deliveries (so slow deliveries show as latency).
fn drive_rate(room: Arc<Room>, senders: Vec<UnboundedSender<Command>>, rate: f64) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for turn in 0.. {
            tick.tick().await;
            let _ = senders[turn % senders.len()].send(Command::Say);
            room.sent.fetch_add(1, Relaxed);
        }
    })
}

fn senders(clients: &[Client], count: usize) -> Vec<UnboundedSender<Command>> {
    clients.iter().take(count).map(|c| c.commands.clone()).collect()
}

/// The counters of a measurement window's edge.
struct Snap {
    server: Usage,
    client: Usage,
    machine_s: f64,
    delivered: u64,
    message_frames: u64,
    said: u64,
    said_frames: u64,
}

impl Snap {
    fn take(server: &Server, rooms: &[Arc<Room>]) -> Snap {
        Snap {
            server: server.usage(),
            client: Usage::own(),
            machine_s: machine_busy_s(),
            delivered: rooms.iter().map(|r| r.delivered.load(Relaxed)).sum(),
            message_frames: rooms.iter().map(|r| r.message_frames.load(Relaxed)).sum(),
            said: rooms.iter().map(|r| r.said.load(Relaxed)).sum(),
            said_frames: rooms.iter().map(|r| r.said_frames.load(Relaxed)).sum(),
        }
    }
}

/// How busy the server, the load generator and everything else on the machine were.
fn usage_shares(out: &mut Outcome, a: &Snap, b: &Snap) {
    let (server_cpu, wall) = b.server.since(&a.server);
    let (client_cpu, _) = b.client.since(&a.client);
    let other = (b.machine_s - a.machine_s - server_cpu - client_cpu).max(0.0);
    out.add("server_cores", "server CPU busy", "cores", Neither, server_cpu / wall);
    out.add("client_cores", "load generator CPU busy", "cores", Neither, client_cpu / wall);
    out.add("other_cores", "other processes' CPU (noise)", "cores", Neither, other / wall);
}

/// Notes anything that went wrong on the way: lost deliveries, error frames, dropped sockets.
fn check(out: &mut Outcome, rooms: &[Arc<Room>], drained: bool) {
    let owed: u64 = rooms.iter().map(|r| r.outstanding()).sum();
    let errors: u64 = rooms.iter().map(|r| r.errors.load(Relaxed)).sum();
    let ended: u64 = rooms.iter().map(|r| r.ended.load(Relaxed)).sum();
    if !drained || owed > 0 {
        out.note(format!("{owed} deliveries never arrived"));
    }
    if errors > 0 {
        out.note(format!("{errors} error frames"));
    }
    if ended > 0 {
        out.note(format!("{ended} sockets ended early"));
    }
}

async fn drain(rooms: &[Arc<Room>]) -> bool {
    let mut all = true;
    for room in rooms {
        all &= room.wait_until(Duration::from_secs(30), |r| r.outstanding() == 0).await;
    }
    all
}

/// A target with its rooms joined and quiet, ready to take load.
struct Rig {
    server: Server,
    rooms: Vec<Arc<Room>>,
    clients: Vec<Vec<Client>>,
}

async fn rig(bench: &Bench<'_>, target: &Target, rooms: usize, size: usize) -> Result<Rig, String> {
    let server = bench.start(target).await?;
    let mut rig = Rig { server, rooms: Vec::new(), clients: Vec::new() };
    for r in 0..rooms {
        let room = if target.socketio { Room::mixed(size) } else { Room::new(size, target) };
        let members = join(&rig.server, &format!("load{r}"), size, 0, &room, 100).await?;
        rig.rooms.push(room);
        rig.clients.push(members);
    }
    for (room, members) in rig.rooms.iter().zip(&rig.clients) {
        settle(room, members).await?;
    }
    Ok(rig)
}

/// How a load scenario drives each of its rooms.
#[derive(Clone, Copy)]
pub enum Load {
    /// `senders` per room keep `window` messages in flight: as fast as the room delivers.
    Window { senders: usize, window: u64 },
    /// `senders` per room send `rate` messages per second in all, on a fixed schedule.
    Rate { senders: usize, rate: f64 },
    /// Like `Window`, with every delivery timed: how long the slowest took, and how often a
    /// sender waited over a second for its own message.
    Stall { senders: usize, window: u64 },
    /// The first room is quiet: one sender at `rate` messages per second, every delivery timed.
    /// Every other room is saturated by one sender keeping `window` messages in flight.
    Quiet { rate: f64, window: u64 },
}

impl Load {
    /// Whether the deliveries of `room` (its index in the rig) are timed.
    fn times(self, room: usize) -> bool {
        match self {
            Load::Window { .. } => false,
            Load::Quiet { .. } => room == 0,
            Load::Rate { .. } | Load::Stall { .. } => true,
        }
    }
}

impl Rig {
    fn drive(&self, load: Load) -> Vec<JoinHandle<()>> {
        self.rooms
            .iter()
            .zip(&self.clients)
            .enumerate()
            .map(|(i, (room, members))| match load {
                Load::Window { senders: n, window } | Load::Stall { senders: n, window } => {
                    drive_window(room.clone(), senders(members, n), window, u64::MAX)
                }
                Load::Rate { senders: n, rate } => drive_rate(room.clone(), senders(members, n), rate),
                Load::Quiet { rate, .. } if i == 0 => drive_rate(room.clone(), senders(members, 1), rate),
                Load::Quiet { window, .. } => drive_window(room.clone(), senders(members, 1), window, u64::MAX),
            })
            .collect()
    }

    fn finish(self) {
        finish(self.server, self.clients.into_iter().flatten().collect());
    }
}

/// What one target measured over its slices.
#[derive(Default)]
struct Slices {
    rates: Vec<f64>,
    cpu_per_10k: Vec<f64>,
    server: Vec<f64>,
    client: Vec<f64>,
    other: Vec<f64>,
    latencies_us: Vec<u32>,
    slice_p99_ms: Vec<f64>,
    batch: Vec<f64>,
    sent_batch: Vec<f64>,
    slow_echoes: u64,
}

/// The timed deliveries' quantiles, and the median of the slices' p99s.
fn add_latencies(out: &mut Outcome, s: &mut Slices) {
    s.latencies_us.sort_unstable();
    let pick = |q: f64| quantile(&s.latencies_us, q).map_or(f64::NAN, |us| f64::from(us) / 1000.0);
    out.add("p50_ms", "latency p50", "ms", Lower, pick(0.50));
    out.add("p95_ms", "latency p95", "ms", Lower, pick(0.95));
    out.add("p99_ms", "latency p99", "ms", Lower, pick(0.99));
    out.add("max_ms", "latency max", "ms", Lower, pick(1.0));
    out.add_rounds("slice_p99_ms", "latency p99 of a slice, median", "ms", Lower, &mut s.slice_p99_ms);
    out.add("samples", "deliveries timed", "", Neither, s.latencies_us.len() as f64);
}

/// Scenarios 1 to 3. Every target runs at once, each with its rooms joined, and the load
/// goes to one target at a time in short slices, taking turns: on a shared machine whose
/// speed drifts from second to second, neighbouring slices see the same machine, so the
/// ratios hold even when the absolute figures wander. Each figure is the median over slices.
pub async fn alternate(
    bench: &Bench<'_>,
    targets: &[Target],
    id: &str,
    rooms: usize,
    size: usize,
    load: Load,
    slice_count: usize,
) -> Vec<(String, Result<Outcome, String>)> {
    let plan = bench.plan;
    let mut rigs = Vec::new();
    for target in targets {
        rigs.push(rig(bench, target, rooms, size).await);
    }
    let mut slices: Vec<Slices> = targets.iter().map(|_| Slices::default()).collect();
    // A first, unmeasured run lets each runtime's JIT reach its steady tier.
    for rig in rigs.iter().flatten() {
        let drivers = rig.drive(load);
        tokio::time::sleep(plan.warmup).await;
        drivers.iter().for_each(JoinHandle::abort);
        drain(&rig.rooms).await;
    }
    let perfs: Vec<Perf> = rigs
        .iter()
        .zip(targets)
        .filter_map(|(rig, target)| rig.as_ref().ok().map(|rig| Perf::start(&rig.server, &format!("{}-{id}", target.name))))
        .collect();
    let mut notes: Vec<Vec<String>> = targets.iter().map(|_| Vec::new()).collect();
    for slice in 0..slice_count {
        // Rotating who goes first keeps any drift within a round from favouring one target.
        for turn in 0..targets.len() {
            let i = (slice + turn) % targets.len();
            let Ok(rig) = &rigs[i] else { continue };
            let drivers = rig.drive(load);
            tokio::time::sleep(plan.slice_warmup).await;
            let from = now_us();
            for (r, room) in rig.rooms.iter().enumerate() {
                room.record_from_us.store(from, Relaxed);
                room.recording.store(load.times(r), Relaxed);
            }
            let a = Snap::take(&rig.server, &rig.rooms);
            tokio::time::sleep(plan.slice).await;
            let b = Snap::take(&rig.server, &rig.rooms);
            drivers.iter().for_each(JoinHandle::abort);
            if !drain(&rig.rooms).await {
                notes[i].push("deliveries still owed after 30 s".into());
            }
            let s = &mut slices[i];
            let (server_cpu, wall) = b.server.since(&a.server);
            let (client_cpu, _) = b.client.since(&a.client);
            let delivered = (b.delivered - a.delivered) as f64;
            s.rates.push(delivered / wall);
            s.batch.push(delivered / (b.message_frames - a.message_frames).max(1) as f64);
            s.sent_batch.push((b.said - a.said) as f64 / (b.said_frames - a.said_frames).max(1) as f64);
            s.cpu_per_10k.push(1000.0 * server_cpu / delivered * 10_000.0);
            s.server.push(server_cpu / wall);
            s.client.push(client_cpu / wall);
            s.other.push(((b.machine_s - a.machine_s - server_cpu - client_cpu) / wall).max(0.0));
            let mut slice_latencies = Vec::new();
            for room in &rig.rooms {
                room.recording.store(false, Relaxed);
                s.slow_echoes += room.slow_echoes.swap(0, Relaxed);
                slice_latencies.append(&mut room.latencies_us.lock().expect("latency lock"));
            }
            slice_latencies.sort_unstable();
            if let Some(us) = quantile(&slice_latencies, 0.99) {
                s.slice_p99_ms.push(f64::from(us) / 1000.0);
            }
            s.latencies_us.append(&mut slice_latencies);
        }
    }
    drop(perfs);
    let mut results = Vec::new();
    for ((target, rig), (mut s, notes)) in targets.iter().zip(rigs).zip(slices.into_iter().zip(notes)) {
        let rig = match rig {
            Ok(rig) => rig,
            Err(error) => {
                results.push((target.name.to_owned(), Err(error)));
                continue;
            }
        };
        let mut out = Outcome::default();
        match load {
            Load::Window { .. } => {
                out.add_rounds("deliveries_per_s", "deliveries per second", "/s", Higher, &mut s.rates);
                out.add_rounds("cpu_per_10k", "server CPU per 10k deliveries", "ms", Lower, &mut s.cpu_per_10k);
            }
            Load::Rate { .. } => {
                add_latencies(&mut out, &mut s);
                out.add_rounds("cpu_per_10k", "server CPU per 10k deliveries", "ms", Lower, &mut s.cpu_per_10k);
            }
            Load::Quiet { .. } => {
                out.add_rounds("deliveries_per_s", "deliveries per second, every room", "/s", Higher, &mut s.rates);
                add_latencies(&mut out, &mut s);
            }
            Load::Stall { .. } => {
                s.latencies_us.sort_unstable();
                let pick = |q: f64| quantile(&s.latencies_us, q).map_or(f64::NAN, |us| f64::from(us) / 1000.0);
                out.add_rounds("deliveries_per_s", "deliveries per second", "/s", Higher, &mut s.rates);
                out.add("p99_ms", "latency p99", "ms", Lower, pick(0.99));
                out.add("max_ms", "slowest delivery", "ms", Lower, pick(1.0));
                out.add("slow_echoes", "own messages back after > 1 s", "", Lower, s.slow_echoes as f64);
            }
        }
        out.add_rounds("batch", "messages per WebSocket frame, mean", "", Neither, &mut s.batch);
        // What the server can coalesce on the way in: a message per frame means one event per message.
        out.add_rounds("sent_batch", "messages per frame from clients, mean", "", Neither, &mut s.sent_batch);
        out.add_rounds("server_cores", "server CPU busy", "cores", Neither, &mut s.server);
        out.add_rounds("client_cores", "load generator CPU busy", "cores", Neither, &mut s.client);
        out.add_rounds("other_cores", "other processes' CPU (noise)", "cores", Neither, &mut s.other);
        out.notes = notes;
        out.notes.dedup();
        check(&mut out, &rig.rooms, true);
        rig.finish();
        results.push((target.name.to_owned(), Ok(out)));
    }
    results
}

/// Issue 12: fan-out in a room of all three wire formats (a quarter native sockets, a quarter
/// Socket.IO over WebSocket, half reading an event stream), against an all-native room of the same
/// size on the same runtime, the two taking turns slice by slice (as `alternate` does across
/// targets). Socket members send; the cost is server CPU per delivery.
pub async fn sse_room(bench: &Bench<'_>, target: &Target) -> Result<Outcome, String> {
    const SIZE: usize = 100;
    const STREAMS: usize = 50;
    let plan = bench.plan;
    let server = bench.start(target).await?;
    let native_room = Room::new(SIZE, target);
    let native = join(&server, "native", SIZE, 0, &native_room, 100).await?;
    settle(&native_room, &native).await?;
    let mixed_room = Room::mixed(SIZE);
    let sockets = join(&server, "mixed", SIZE - STREAMS, 0, &mixed_room, 100).await?;
    let mut readers = Vec::new();
    for number in SIZE - STREAMS..SIZE {
        let path = format!("/chat/mixed/events?nick=c{number}");
        let (task, welcomed) = client::spawn_sse(server.port, path, number, mixed_room.clone());
        readers.push(task);
        welcomed.await.map_err(|_| "a stream task died".to_owned())??;
    }
    settle(&mixed_room, &sockets).await?;
    let rooms = [(native_room, native), (mixed_room, sockets)];
    let load = |(room, members): &(Arc<Room>, Vec<Client>)| {
        drive_window(room.clone(), senders(members, plan.fanout_senders), plan.fanout_window, u64::MAX)
    };
    for pair in &rooms {
        let driver = load(pair);
        tokio::time::sleep(plan.warmup).await;
        driver.abort();
        drain(std::slice::from_ref(&pair.0)).await;
    }
    let (mut cpu, mut rates): ([Vec<f64>; 2], [Vec<f64>; 2]) = Default::default();
    let mut notes = Vec::new();
    for slice in 0..plan.key_slices {
        for turn in 0..2 {
            let i = (slice + turn) % 2;
            let room = std::slice::from_ref(&rooms[i].0);
            let driver = load(&rooms[i]);
            tokio::time::sleep(plan.slice_warmup).await;
            let a = Snap::take(&server, room);
            tokio::time::sleep(plan.slice).await;
            let b = Snap::take(&server, room);
            driver.abort();
            if !drain(room).await {
                notes.push("deliveries still owed after 30 s".to_owned());
            }
            let (server_cpu, wall) = b.server.since(&a.server);
            let delivered = (b.delivered - a.delivered) as f64;
            cpu[i].push(1000.0 * server_cpu / delivered * 10_000.0);
            rates[i].push(delivered / wall);
        }
    }
    let mut ratios: Vec<f64> = cpu[1].iter().zip(&cpu[0]).map(|(mixed, native)| mixed / native).collect();
    let mut out = Outcome::default();
    let [native_cpu, mixed_cpu] = &mut cpu;
    let [native_rate, mixed_rate] = &mut rates;
    out.add_rounds("native_cpu_per_10k", "all native: server CPU per 10k deliveries", "ms", Lower, native_cpu);
    out.add_rounds("mixed_cpu_per_10k", "mixed: server CPU per 10k deliveries", "ms", Lower, mixed_cpu);
    out.add_rounds("mixed_over_native", "mixed over all native, per delivery (slice pairs)", "x", Lower, &mut ratios);
    out.add_rounds("native_deliveries_per_s", "all native: deliveries per second", "/s", Higher, native_rate);
    out.add_rounds("mixed_deliveries_per_s", "mixed: deliveries per second", "/s", Higher, mixed_rate);
    out.notes = notes;
    out.notes.dedup();
    let (rooms, clients): (Vec<Arc<Room>>, Vec<Vec<Client>>) = rooms.into_iter().unzip();
    check(&mut out, &rooms, true);
    readers.iter().for_each(JoinHandle::abort);
    finish(server, clients.into_iter().flatten().collect());
    Ok(out)
}

/// Scenario 4: every client of one room connects at once.
pub async fn storm(bench: &Bench<'_>, target: &Target) -> Result<Outcome, String> {
    let count = bench.plan.storm;
    let server = bench.start(target).await?;
    let room = Room::new(count, target);
    let url = server.ws_url("/chat/storm");
    let a = Snap::take(&server, &[]);
    let started = Instant::now();
    let (clients, pending): (Vec<_>, Vec<_>) =
        (0..count).map(|n| client::spawn(format!("{url}?nick=c{n}"), n, room.clone())).unzip();
    let mut waits = Vec::with_capacity(count);
    let mut failures = Vec::new();
    for welcomed in pending {
        match welcomed.await {
            Ok(Ok(wait)) => waits.push(wait),
            Ok(Err(error)) => failures.push(error),
            Err(_) => failures.push("client task died".into()),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let b = Snap::take(&server, &[]);
    waits.sort_unstable();
    let pick = |q: f64| quantile(&waits, q).map_or(f64::NAN, |w| w.as_secs_f64() * 1000.0);
    let mut out = Outcome::default();
    out.add("joins_per_s", "joins per second", "/s", Higher, waits.len() as f64 / elapsed);
    out.add("welcome_p50_ms", "time to welcome p50", "ms", Lower, pick(0.5));
    out.add("welcome_p99_ms", "time to welcome p99", "ms", Lower, pick(0.99));
    let (server_cpu, _) = b.server.since(&a.server);
    out.add("cpu_per_join_ms", "server CPU per join", "ms", Lower, 1000.0 * server_cpu / waits.len().max(1) as f64);
    // Frames after the welcomes (`joined`) per WebSocket frame, until the last welcome.
    let batch = room.frames.load(Relaxed) as f64 / room.ws_frames.load(Relaxed).max(1) as f64;
    out.add("batch", "frames per WebSocket frame after the welcome, mean", "", Neither, batch);
    usage_shares(&mut out, &a, &b);
    if !failures.is_empty() {
        out.note(format!("{} joins failed, first: {}", failures.len(), failures[0]));
    }
    finish(server, clients);
    Ok(out)
}

/// Scenario 5, memory: resident memory for idle sockets, and whether it comes back when they
/// close; then whether it grows with the number of messages a room has carried.
pub async fn memory(bench: &Bench<'_>, target: &Target) -> Result<Outcome, String> {
    const AFTER: [(&str, &str); 3] = [
        ("rss_after_close_1_mb", "resident above base, all closed"),
        ("rss_after_close_2_mb", "... after a second 1,000 came and went"),
        ("rss_after_close_3_mb", "... after a third"),
    ];
    let plan = bench.plan;
    let mut out = Outcome::default();
    let server = bench.start(target).await?;
    let mut base = Vec::new();
    let mut rooms = Vec::new();
    for r in 0..plan.idle_rooms {
        let room = Room::new(plan.base_per_room, target);
        base.push(join(&server, &format!("idle{r}"), plan.base_per_room, 0, &room, 50).await?);
        rooms.push(room);
    }
    let mb = |kb: u64| kb as f64 / 1024.0;
    let baseline = server.usage().rss_kb;
    out.add("rss_base_mb", "resident, rooms with a few sockets", "MB", Lower, mb(baseline));
    let idle = plan.idle_rooms * plan.idle_per_room;
    for cycle in 1..=plan.idle_cycles {
        let mut extra = Vec::new();
        for (r, room) in rooms.iter().enumerate() {
            let first = plan.base_per_room + cycle * plan.idle_per_room;
            extra.push(join(&server, &format!("idle{r}"), plan.idle_per_room, first, room, 50).await?);
        }
        for (room, members) in rooms.iter().zip(&extra) {
            settle(room, members).await?;
        }
        let loaded = server.usage().rss_kb;
        if cycle == 1 {
            let per_1000 = mb(loaded.saturating_sub(baseline)) * 1000.0 / idle as f64;
            out.add("rss_per_1000_idle_mb", "resident per 1,000 idle sockets", "MB", Lower, per_1000);
        }
        for (r, (room, members)) in rooms.iter().zip(&extra).enumerate() {
            let ended = room.ended.load(Relaxed) + members.len() as u64;
            members.iter().for_each(|c| c.send(Command::Close));
            if !room.wait_until(Duration::from_secs(30), |room| room.ended.load(Relaxed) >= ended).await {
                return Err("closing sockets timed out".into());
            }
            wait_members(&server, &format!("idle{r}"), plan.base_per_room as u64).await?;
        }
        for (room, members) in rooms.iter().zip(&base) {
            settle(room, members).await?;
        }
        let after = server.usage().rss_kb;
        if let Some((key, label)) = AFTER.get(cycle - 1) {
            out.add(key, label, "MB", Lower, mb(after) - mb(baseline));
        }
    }
    finish(server, base.into_iter().flatten().collect());

    let server = bench.start(target).await?;
    let room = Room::new(2, target);
    let clients = join(&server, "messages", 2, 0, &room, 2).await?;
    let before = server.usage();
    let driver = drive_window(room.clone(), senders(&clients, 2), plan.fanout_window, plan.messages);
    let mut samples = Vec::new();
    for tenth in 1..=10u64 {
        let goal = plan.messages * room.size * tenth / 10;
        if !room.wait_until(Duration::from_secs(120), |r| r.delivered.load(Relaxed) >= goal).await {
            return Err(format!("messages stalled at {}", room.delivered.load(Relaxed)));
        }
        samples.push(server.usage());
    }
    driver.abort();
    // The heap grows to its working size over the first messages; what counts is whether it
    // keeps growing after that: a leak adds as much in the second half as in the first.
    let (half, last) = (samples[4], samples[9]);
    out.add("rss_messages_start_mb", "resident before the messages", "MB", Lower, mb(before.rss_kb));
    out.add("rss_messages_fifth_mb", "... after 1/5 of them", "MB", Lower, mb(samples[1].rss_kb));
    out.add("rss_messages_half_mb", "... after half", "MB", Lower, mb(half.rss_kb));
    out.add("rss_messages_end_mb", "... after all", "MB", Lower, mb(last.rss_kb));
    out.add("rss_messages_growth_mb", "growth over the second half", "MB", Lower, mb(last.rss_kb) - mb(half.rss_kb));
    out.add("rss_messages_first_half_mb", "... and over the first", "MB", Neither, mb(half.rss_kb) - mb(before.rss_kb));
    check(&mut out, &[room], true);
    finish(server, clients);
    Ok(out)
}

/// Polls `/chat/ROOM/users` until the room has `count` members.
async fn wait_members(server: &Server, room: &str, count: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = client::member_count(server.port, room).await?;
        if now == count {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{room} still has {now} members, expected {count}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Scenario 6: code size, and how soon a freshly started runtime welcomes its first client;
/// `main` repeats it, the targets taking turns, and keeps the medians.
pub async fn start(bench: &Bench<'_>, target: &Target) -> Result<Outcome, String> {
    let mut out = Outcome::default();
    let (mut raw, mut gz, mut wasm_raw, mut wasm_gz) = (0usize, 0usize, f64::NAN, f64::NAN);
    for module in target.modules() {
        let bytes = std::fs::read(module).map_err(|e| e.to_string())?;
        let zipped = gzip(&bytes);
        raw += bytes.len();
        gz += zipped;
        if module.extension().is_some_and(|e| e == "wasm") {
            wasm_raw = bytes.len() as f64 / 1024.0;
            wasm_gz = zipped as f64 / 1024.0;
        }
    }
    out.add("code_kb", "code size (all modules)", "KB", Lower, raw as f64 / 1024.0);
    out.add("code_gz_kb", "code size gzipped", "KB", Lower, gz as f64 / 1024.0);
    out.add("wasm_kb", "WASM size", "KB", Lower, wasm_raw);
    out.add("wasm_gz_kb", "WASM size gzipped", "KB", Lower, wasm_gz);
    let lifted: Vec<(&str, String)> = LIFTED.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    let server = Server::spawn(bench.runtime, target, &lifted)?;
    let address = format!("127.0.0.1:{}", server.port);
    let deadline = Instant::now() + Duration::from_secs(30);
    let tcp = loop {
        match TcpStream::connect(&address).await {
            Ok(tcp) => break tcp,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(error) => return Err(format!("runtime never listened: {error}; {}", server.log_tail())),
        }
    };
    let connected = Instant::now();
    let cpu_before = thread_cpu_ms(server.pid);
    // Start-up alone (spawn to listening), so that a slower first welcome shows which half it comes from.
    out.add("listening_ms", "runtime start to listening", "ms", Lower, connected.duration_since(server.spawned).as_secs_f64() * 1000.0);
    out.add("listening_cpu_ms", "runtime CPU until listening", "ms", Lower, cpu_before);
    welcome_on(tcp, &server.ws_url("/chat/cold"), target.batch).await?;
    out.add("start_to_welcome_ms", "runtime start to first welcome", "ms", Lower, server.spawned.elapsed().as_secs_f64() * 1000.0);
    out.add("first_join_ms", "first join on a cold runtime", "ms", Lower, connected.elapsed().as_secs_f64() * 1000.0);
    // CPU rather than wall time: what the first join costs the runtime, less disturbed by a busy machine.
    out.add("first_join_cpu_ms", "runtime CPU in the first join", "ms", Lower, thread_cpu_ms(server.pid) - cpu_before);
    let tcp = TcpStream::connect(&address).await.map_err(|e| e.to_string())?;
    let again = Instant::now();
    welcome_on(tcp, &server.ws_url("/chat/cold"), target.batch).await?;
    out.add("warm_join_ms", "second join, same room", "ms", Lower, again.elapsed().as_secs_f64() * 1000.0);
    Ok(out)
}

/// CPU time of every thread of process `pid` so far, in ms, from schedstat (nanoseconds, where
/// stat counts in ticks of 10 ms).
fn thread_cpu_ms(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return f64::NAN };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e6
}

async fn welcome_on(tcp: TcpStream, url: &str, batch: bool) -> Result<(), String> {
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut socket = client::upgrade(url, tcp, batch).await?;
    match tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
        Ok(Some(Ok(Message::Text(text)))) if text.starts_with("{\"type\":\"welcome\"") => Ok(()),
        other => Err(format!("expected a welcome, got {other:?}")),
    }
}

fn gzip(bytes: &[u8]) -> usize {
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory").len()
}

/// The `q` quantile of sorted values (nearest rank), `None` when there are none.
fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let rank = (sorted.len() as f64 * q).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
