//! edge chat's benchmark: runs the scenarios of issue 4 against the Rust Worker and two
//! plain-JS reference rooms, each on bare workerd on loopback, prints a table with the
//! Rust/JS ratios and writes the same figures as JSON. Started by bench/run.sh.
//!
//!   loadgen --root DIR --workerd PATH [--quick] [--via-wrangler-dev] [--targets rust,reference,floor] [SCENARIO...]
//!
//! Scenarios: fanout mixed latency rooms stall quiet sse storm memory start (the default set), and soak (only when
//! named). The client is one single-threaded process: on a 2-core machine the runtime's
//! isolate gets the other core, and each scenario reports both processes' CPU use, which
//! shows which side was the bottleneck.

mod client;
mod report;
mod scenarios;
mod soak;
mod target;

use report::{Outcome, Report, Section};
use scenarios::{Bench, Load, Plan};
use serde_json::{json, Map};
use std::path::PathBuf;
use std::time::Instant;
use target::{Runtime, Target};

const DEFAULT_SCENARIOS: [&str; 10] = ["fanout", "mixed", "latency", "rooms", "stall", "quiet", "sse", "storm", "memory", "start"];
const FANOUT_SIZES: [usize; 3] = [10, 100, 1000];

struct Args {
    root: PathBuf,
    workerd: PathBuf,
    quick: bool,
    targets: Vec<String>,
    scenarios: Vec<String>,
    rounds: usize,
    /// Serve each target with `wrangler dev` (ROOT/node_modules/.bin/wrangler) instead of bare workerd.
    via_wrangler_dev: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        root: PathBuf::from("."),
        workerd: PathBuf::from("workerd"),
        quick: false,
        targets: vec!["rust".into(), "batched".into(), "reference".into(), "floor".into()],
        scenarios: Vec::new(),
        rounds: 0,
        via_wrangler_dev: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--root" => args.root = PathBuf::from(value()?),
            "--workerd" => args.workerd = PathBuf::from(value()?),
            "--quick" => args.quick = true,
            "--via-wrangler-dev" => args.via_wrangler_dev = true,
            "--targets" => args.targets = value()?.split(',').map(str::to_owned).collect(),
            "--rounds" => args.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            name if !name.starts_with('-') && (DEFAULT_SCENARIOS.contains(&name) || name == "soak") => {
                args.scenarios.push(name.to_owned())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.scenarios.is_empty() {
        args.scenarios = DEFAULT_SCENARIOS.iter().map(|s| (*s).to_owned()).collect();
    }
    if args.targets.first().and_then(|t| t.split('=').next()) != Some("rust") {
        return Err("the first target must be rust: ratios are rust over the others".into());
    }
    if args.rounds == 0 {
        args.rounds = 1;
    }
    // Start-up, memory and the soak read one process's figures, and wrangler dev runs three.
    if args.via_wrangler_dev && args.scenarios.iter().any(|s| matches!(s.as_str(), "start" | "memory" | "soak")) {
        return Err("--via-wrangler-dev runs the load scenarios only: name them (fanout mixed latency rooms stall quiet sse storm)".into());
    }
    Ok(args)
}

/// `rust`, `batched` (the same Worker, clients opting in to batched delivery), `reference`, `floor`,
/// or `NAME=PATH/wrangler.toml` for a variant under study (batched when NAME ends in "batched", and
/// batched without sending arrays when it ends in "batched_single").
fn load_target(root: &std::path::Path, name: &str) -> Result<Target, String> {
    if let Some((label, config)) = name.split_once('=') {
        return Target::load(Box::leak(label.to_owned().into_boxed_str()), &root.join(config));
    }
    match name {
        "rust" => Target::load("rust", &root.join("wrangler.toml")),
        "batched" => Target::load("batched", &root.join("wrangler.toml")),
        "reference" => Target::load("reference", &root.join("bench/fixtures/reference/wrangler.toml")),
        "floor" => Target::load("floor", &root.join("bench/fixtures/floor/wrangler.toml")),
        "mixed" => Target::load("mixed", &root.join("wrangler.toml")),
        other => Err(format!("unknown target {other}")),
    }
}

/// What one section runs: its id, title, parameters, and either the load all targets take
/// in turns, or how many rounds each target runs alone.
struct Job {
    id: String,
    title: String,
    params: String,
    shape: Shape,
}

enum Shape {
    Alternate { rooms: usize, size: usize, load: Load, slices: usize },
    Alone { rounds: usize },
}

fn jobs(args: &Args, plan: &Plan) -> Vec<Job> {
    let secs = |d: std::time::Duration| format!("{:.2} s", d.as_secs_f64()).replace(".00 s", " s");
    let slicing = |count: usize| {
        format!("{count} slices of {} per target, taking turns, after {} warm-up", secs(plan.slice), secs(plan.warmup))
    };
    let mut jobs = Vec::new();
    for scenario in &args.scenarios {
        match scenario.as_str() {
            "fanout" => {
                for size in FANOUT_SIZES {
                    let senders = plan.fanout_senders.min(size);
                    let slices = if size == 100 { plan.key_slices } else { plan.slices };
                    jobs.push(Job {
                        id: format!("fanout-{size}"),
                        title: format!("1 fan-out throughput, {size} clients in one room"),
                        params: format!("{senders} senders, {} msgs in flight; {}", plan.fanout_window, slicing(slices)),
                        shape: Shape::Alternate {
                            rooms: 1,
                            size,
                            load: Load::Window { senders, window: plan.fanout_window },
                            slices,
                        },
                    });
                }
            }
            "mixed" => {
                // Issue 12: a room of 100 where every second client is a Socket.IO client, against the
                // all-native room, the two taking turns.
                let senders = plan.fanout_senders;
                jobs.push(Job {
                    id: "mixed-100".into(),
                    title: "1b mixed-room fan-out, 100 clients in one room, half of them Socket.IO".into(),
                    params: format!(
                        "{senders} senders (native and Socket.IO alike), {} msgs in flight; rust (all native) against mixed; {}",
                        plan.fanout_window,
                        slicing(plan.key_slices)
                    ),
                    shape: Shape::Alternate {
                        rooms: 1,
                        size: 100,
                        load: Load::Window { senders, window: plan.fanout_window },
                        slices: plan.key_slices,
                    },
                });
            }
            "latency" => jobs.push(Job {
                id: "latency".into(),
                title: format!("2 latency under load, {} clients in one room", plan.latency_clients),
                params: format!(
                    "{} msgs/s from {} senders, every delivery timed; {}",
                    plan.latency_rate,
                    plan.latency_senders,
                    slicing(plan.key_slices)
                ),
                shape: Shape::Alternate {
                    rooms: 1,
                    size: plan.latency_clients,
                    load: Load::Rate { senders: plan.latency_senders, rate: plan.latency_rate },
                    slices: plan.key_slices,
                },
            }),
            "rooms" => jobs.push(Job {
                id: "rooms".into(),
                title: format!("3 many rooms, {} rooms of {}", plan.rooms, plan.room_size),
                params: format!(
                    "1 sender per room, {} msgs in flight per room; {}",
                    plan.room_window,
                    slicing(plan.slices)
                ),
                shape: Shape::Alternate {
                    rooms: plan.rooms,
                    size: plan.room_size,
                    load: Load::Window { senders: 1, window: plan.room_window },
                    slices: plan.slices,
                },
            }),
            "stall" => {
                // Issue 13: closed-loop senders saturating the room; 4 keeping 8 each in flight in a room
                // of 100, and 20 rooms of 10 with one such sender each.
                for (rooms, size, senders) in [(1, 100, 4), (20, 10, 1)] {
                    let window = 8 * senders as u64;
                    jobs.push(Job {
                        id: format!("stall-{rooms}x{size}"),
                        title: format!("3b stalls, {rooms} room(s) of {size}"),
                        params: format!(
                            "{senders} sender(s) per room, {window} msgs in flight per room, every delivery timed; {}",
                            slicing(plan.slices)
                        ),
                        shape: Shape::Alternate { rooms, size, load: Load::Stall { senders, window }, slices: plan.slices },
                    });
                }
            }
            "quiet" => jobs.push(Job {
                id: "quiet".into(),
                title: format!("3d a quiet room among {} saturated ones, rooms of 10", plan.quiet_busy_rooms),
                params: format!(
                    "the quiet room: 1 sender at {} msgs/s, every delivery timed; the others: 1 sender each, 8 msgs in flight; {}",
                    plan.quiet_rate,
                    slicing(plan.slices)
                ),
                shape: Shape::Alternate {
                    rooms: plan.quiet_busy_rooms + 1,
                    size: 10,
                    load: Load::Quiet { rate: plan.quiet_rate, window: 8 },
                    slices: plan.slices,
                },
            }),
            "sse" => jobs.push(Job {
                id: "sse".into(),
                title: "3c mixed room: 25 native + 25 Socket.IO + 50 SSE clients against 100 native, one runtime".into(),
                params: format!(
                    "{} senders, {} msgs in flight; {} slices per room, taking turns",
                    plan.fanout_senders, plan.fanout_window, plan.key_slices
                ),
                shape: Shape::Alone { rounds: 1 },
            }),
            "storm" => jobs.push(Job {
                id: "storm".into(),
                title: format!("4 join storm, {} clients into one room at once", plan.storm),
                params: format!("every connect started together; median of {} rounds", args.rounds),
                shape: Shape::Alone { rounds: args.rounds },
            }),
            "memory" => jobs.push(Job {
                id: "memory".into(),
                title: "5 cost: memory (CPU per delivery is in 1 to 3)".into(),
                params: format!(
                    "{} rooms of {} + {} idle sockets, closed, twice; then {} messages through a room of 2",
                    plan.idle_rooms,
                    plan.base_per_room,
                    plan.idle_rooms * plan.idle_per_room,
                    plan.messages
                ),
                shape: Shape::Alone { rounds: 1 },
            }),
            "start" => jobs.push(Job {
                id: "start".into(),
                title: "6 bundle and start".into(),
                params: format!("median of {} cold starts of workerd per target, taking turns", plan.starts),
                shape: Shape::Alone { rounds: plan.starts },
            }),
            "soak" => jobs.push(Job {
                id: "soak".into(),
                title: format!(
                    "soak (issue 5), {} sockets over {} rooms",
                    plan.soak.rooms * plan.soak.per_room,
                    plan.soak.rooms
                ),
                params: format!(
                    "{} msgs/s per room for {}, every client dropped and back at half time (jitter up to {} ms)",
                    plan.soak.rate,
                    secs(plan.soak.duration),
                    plan.soak.jitter.as_millis()
                ),
                shape: Shape::Alone { rounds: 1 },
            }),
            _ => unreachable!("scenario names are checked when parsed"),
        }
    }
    jobs
}

async fn run_alone(bench: &Bench<'_>, target: &Target, id: &str) -> Result<Outcome, String> {
    match id {
        "sse" => scenarios::sse_room(bench, target).await,
        "storm" => scenarios::storm(bench, target).await,
        "memory" => scenarios::memory(bench, target).await,
        "start" => scenarios::start(bench, target).await,
        "soak" => soak::soak(bench, target).await,
        other => Err(format!("no scenario {other}")),
    }
}

/// Figure by figure, the median over rounds; notes from every round.
fn merge(rounds: Vec<Outcome>) -> Outcome {
    let mut merged = rounds[0].clone();
    for figure in &mut merged.figures {
        let mut values: Vec<f64> = rounds
            .iter()
            .filter_map(|o| o.figures.iter().find(|f| f.key == figure.key))
            .map(|f| f.value)
            .collect();
        figure.rounds = values.clone();
        figure.value = scenarios::median(&mut values);
    }
    merged.notes = rounds.into_iter().flat_map(|o| o.notes).collect();
    merged.notes.dedup();
    merged
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("loadgen: {error}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let code = runtime.block_on(run(args));
    std::process::exit(code);
}

async fn run(args: Args) -> i32 {
    let root = std::fs::canonicalize(&args.root).unwrap_or(args.root.clone());
    // Each runtime starts in its own state directory, so a relative path would not resolve.
    let workerd = if args.workerd.components().count() > 1 {
        std::fs::canonicalize(&args.workerd).unwrap_or(args.workerd.clone())
    } else {
        args.workerd.clone()
    };
    let mut targets = Vec::new();
    for name in &args.targets {
        match load_target(&root, name) {
            Ok(target) => targets.push(target),
            Err(error) => {
                eprintln!("loadgen: {error}");
                return 2;
            }
        }
    }
    let plan = Plan::new(args.quick);
    let runtime = if args.via_wrangler_dev {
        Runtime::WranglerDev(root.join("node_modules/.bin/wrangler"))
    } else {
        Runtime::Workerd(workerd.clone())
    };
    let bench = Bench { runtime: &runtime, plan: &plan };
    let started = Instant::now();
    let mut sections = Vec::new();
    for job in jobs(&args, &plan) {
        eprintln!("[{:>4.0} s] {}", started.elapsed().as_secs_f64(), job.title);
        let results = match job.shape {
            Shape::Alternate { rooms, size, load, slices } if job.id == "mixed-100" => {
                match ["rust", "mixed"].iter().map(|name| load_target(&root, name)).collect::<Result<Vec<_>, _>>() {
                    Ok(pair) => scenarios::alternate(&bench, &pair, &job.id, rooms, size, load, slices).await,
                    Err(error) => vec![("mixed".to_owned(), Err(error))],
                }
            }
            Shape::Alternate { rooms, size, load, slices } => {
                scenarios::alternate(&bench, &targets, &job.id, rooms, size, load, slices).await
            }
            Shape::Alone { rounds } => {
                let mut results = Vec::new();
                // The soak checks the Rust room's guarantees; the fixtures make none.
                // Memory and start run the same Worker whether clients batch or not.
                let runs: Vec<&Target> = match job.id.as_str() {
                    // Only the Rust Worker speaks SSE; its clients' batching is the same in both rooms.
                    "soak" | "sse" => targets.iter().take(1).collect(),
                    "memory" | "start" => targets.iter().filter(|t| !t.batch).collect(),
                    _ => targets.iter().collect(),
                };
                let mut outcomes: Vec<Vec<Outcome>> = runs.iter().map(|_| Vec::new()).collect();
                let mut failures: Vec<Option<String>> = runs.iter().map(|_| None).collect();
                for _ in 0..rounds {
                    for (i, target) in runs.iter().enumerate() {
                        if failures[i].is_none() {
                            match run_alone(&bench, target, &job.id).await {
                                Ok(outcome) => outcomes[i].push(outcome),
                                Err(error) => failures[i] = Some(error),
                            }
                        }
                    }
                }
                for ((target, outcomes), failure) in runs.iter().zip(outcomes).zip(failures) {
                    let result = match failure {
                        Some(error) => Err(error),
                        None => Ok(merge(outcomes)),
                    };
                    results.push((target.name.to_owned(), result));
                }
                results
            }
        };
        for (name, result) in &results {
            if let Err(error) = result {
                eprintln!("  {name} failed: {error}");
            }
        }
        sections.push(Section { id: job.id, title: job.title, params: job.params, results });
    }
    let mut meta = Map::new();
    meta.insert("date_unix".into(), json!(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())));
    meta.insert("quick".into(), json!(args.quick));
    meta.insert("rounds".into(), json!(args.rounds));
    meta.insert("commit".into(), json!(git(&root, &["rev-parse", "--short", "HEAD"])));
    meta.insert("rust_sources_changed".into(), json!(!git(&root, &["status", "--porcelain", "src", "Cargo.toml"]).is_empty()));
    meta.insert("cpus".into(), json!(std::thread::available_parallelism().map_or(0, |n| n.get())));
    meta.insert("workerd".into(), json!(workerd.display().to_string()));
    meta.insert("via_wrangler_dev".into(), json!(args.via_wrangler_dev));
    meta.insert("duration_s".into(), json!(started.elapsed().as_secs()));
    let mut names: Vec<String> = targets.iter().map(|t| t.name.to_owned()).collect();
    if args.scenarios.iter().any(|s| s == "mixed") {
        names.push("mixed".into());
    }
    let report = Report { targets: names, sections, meta };
    println!("{}", report.table());
    println!("{}", report.goals_table());
    let dir = root.join("bench/results");
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let body = serde_json::to_string_pretty(&report.json()).expect("JSON");
    let written = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(dir.join(format!("bench-{stamp}.json")), &body))
        .and_then(|_| std::fs::write(dir.join("latest.json"), &body));
    match written {
        Ok(()) => println!("figures written to {}", dir.join(format!("bench-{stamp}.json")).display()),
        Err(error) => eprintln!("loadgen: writing results: {error}"),
    }
    println!("total {:.0} s", started.elapsed().as_secs_f64());
    let failed = report.sections.iter().any(|s| s.results.iter().any(|(_, r)| r.is_err()));
    i32::from(failed)
}

fn git(root: &std::path::Path, args: &[&str]) -> String {
    std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
