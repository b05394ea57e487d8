//! The Workers under test and the runtime they run in. Each target is described by its own
//! wrangler config (the project's wrangler.toml, or a fixture's under bench/fixtures), and
//! runs on bare workerd: `wrangler dev` would put a second workerd (its proxy) between the
//! clients and the Worker, doubling the per-frame work on a 2-core machine and spending it
//! outside the process we measure. `--via-wrangler-dev` runs them under `wrangler dev` all the
//! same, to see what its users see (the stalls of scenario 3b were first measured there).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Deserialize)]
struct WranglerConfig {
    name: String,
    main: String,
    compatibility_date: String,
    #[serde(default)]
    compatibility_flags: Vec<String>,
    durable_objects: DurableObjects,
    #[serde(default)]
    migrations: Vec<Migration>,
    #[serde(default)]
    vars: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct DurableObjects {
    bindings: Vec<DurableObjectBinding>,
}

#[derive(Debug, Deserialize)]
struct DurableObjectBinding {
    name: String,
    class_name: String,
}

#[derive(Debug, Deserialize)]
struct Migration {
    #[serde(default)]
    new_sqlite_classes: Vec<String>,
}

/// One Worker to benchmark.
pub struct Target {
    pub name: &'static str,
    /// Its clients offer the `edge-chat.batch` subprotocol.
    pub batch: bool,
    /// Its batched clients send what waits to go out as one array frame.
    pub arrays: bool,
    /// Every second client of a room is a Socket.IO client (over WebSocket, namespace `/`).
    pub socketio: bool,
    config: WranglerConfig,
    wrangler_toml: PathBuf,
    /// The entry module, then every `.wasm` module beside it (how worker-build lays out build/).
    modules: Vec<PathBuf>,
}

impl Target {
    pub fn load(name: &'static str, wrangler_toml: &Path) -> Result<Target, String> {
        let text = fs::read_to_string(wrangler_toml).map_err(|e| format!("{}: {e}", wrangler_toml.display()))?;
        let config: WranglerConfig = toml::from_str(&text).map_err(|e| format!("{}: {e}", wrangler_toml.display()))?;
        let dir = wrangler_toml.parent().unwrap_or(Path::new("."));
        let main = fs::canonicalize(dir.join(&config.main))
            .map_err(|e| format!("{}: main {}: {e} (is it built?)", wrangler_toml.display(), config.main))?;
        let mut modules = vec![main.clone()];
        let mut wasm: Vec<PathBuf> = fs::read_dir(main.parent().expect("a file has a parent"))
            .map_err(|e| e.to_string())?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
            .collect();
        wasm.sort();
        modules.extend(wasm);
        // The same Worker with clients that opt in to batched delivery: "batched", "old_batched". They
        // send what waits as one array frame, unless the name ends in "batched_single" (for a Worker
        // older than arrays from clients, or to measure without them).
        let batch = name.ends_with("batched") || name.ends_with("batched_single");
        let arrays = name.ends_with("batched");
        // The same Worker with a mixed room: half its clients speak Socket.IO ("mixed").
        let socketio = name.ends_with("mixed");
        let wrangler_toml = fs::canonicalize(wrangler_toml).map_err(|e| format!("{}: {e}", wrangler_toml.display()))?;
        Ok(Target { name, batch, arrays, socketio, config, wrangler_toml, modules })
    }

    /// Bytes of each module, for the bundle figures.
    pub fn modules(&self) -> &[PathBuf] {
        &self.modules
    }

    /// A workerd config serving this Worker on `port`, its Durable Objects stored under
    /// `state`, with `overrides` replacing or adding vars.
    fn workerd_config(&self, port: u16, state: &Path, overrides: &[(&str, String)]) -> String {
        let c = &self.config;
        let sqlite: Vec<&str> =
            c.migrations.iter().flat_map(|m| m.new_sqlite_classes.iter().map(String::as_str)).collect();
        let mut vars = c.vars.clone();
        for (name, value) in overrides {
            vars.insert((*name).to_owned(), value.clone());
        }
        let mut out = String::from("using Workerd = import \"/workerd/workerd.capnp\";\n");
        // Under `perf`, V8 writes /tmp/perf-PID.map so that JIT frames (JS and WASM) get names.
        // BENCH_V8_FLAGS (space-separated) adds V8 flags for diagnosis only: a deployed Worker cannot set them.
        let mut v8_flags: Vec<String> = Vec::new();
        if std::env::var_os("BENCH_PERF").is_some() {
            v8_flags.push("--perf-basic-prof".to_owned());
        }
        v8_flags.extend(std::env::var("BENCH_V8_FLAGS").unwrap_or_default().split_whitespace().map(str::to_owned));
        let v8_flags = v8_flags.iter().map(|f| quote(f)).collect::<Vec<_>>().join(", ");
        let _ = write!(
            out,
            "const config :Workerd.Config = (\n  v8Flags = [{v8_flags}],\n  services = [\n    (name = \"main\", worker = .worker),\n    \
             (name = \"storage\", disk = (path = {}, writable = true)),\n  ],\n  \
             sockets = [(name = \"http\", address = \"127.0.0.1:{port}\", http = (), service = \"main\")],\n);\n",
            quote(&state.join("do").display().to_string()),
        );
        out.push_str("const worker :Workerd.Worker = (\n  modules = [\n");
        for (i, module) in self.modules.iter().enumerate() {
            let name = module.file_name().expect("a module file").to_string_lossy();
            let kind = if i == 0 { "esModule" } else { "wasm" };
            let _ = writeln!(out, "    (name = {}, {kind} = embed {}),", quote(&name), quote(&relative_to(state, module)));
        }
        let _ = writeln!(out, "  ],\n  compatibilityDate = {},", quote(&c.compatibility_date));
        let flags: Vec<String> = c.compatibility_flags.iter().map(|f| quote(f)).collect();
        let _ = writeln!(out, "  compatibilityFlags = [{}],\n  bindings = [", flags.join(", "));
        for binding in &c.durable_objects.bindings {
            let _ = writeln!(out, "    (name = {}, durableObjectNamespace = {}),", quote(&binding.name), quote(&binding.class_name));
        }
        for (name, value) in &vars {
            let _ = writeln!(out, "    (name = {}, text = {}),", quote(name), quote(value));
        }
        out.push_str("  ],\n  durableObjectNamespaces = [\n");
        for binding in &c.durable_objects.bindings {
            let sql = sqlite.contains(&binding.class_name.as_str());
            let _ = writeln!(
                out,
                "    (className = {}, uniqueKey = {}, enableSql = {sql}),",
                quote(&binding.class_name),
                quote(&format!("{}-{}", c.name, binding.class_name)),
            );
        }
        out.push_str("  ],\n  durableObjectStorage = (localDisk = \"storage\"),\n);\n");
        out
    }

    /// The target's wrangler config for `wrangler dev` from another directory: its paths made
    /// absolute, and without the platform's rate limiter, which bare workerd does not have
    /// either (every client of the benchmark comes from one address).
    fn dev_config(&self) -> Result<String, String> {
        let dir = self.wrangler_toml.parent().expect("a file has a parent");
        let text = fs::read_to_string(&self.wrangler_toml).map_err(|e| e.to_string())?;
        let mut config: toml::Table = toml::from_str(&text).map_err(|e| format!("{}: {e}", self.wrangler_toml.display()))?;
        let absolute = |value: &mut toml::Value| {
            if let Some(path) = value.as_str() {
                *value = toml::Value::String(dir.join(path).display().to_string());
            }
        };
        if let Some(main) = config.get_mut("main") {
            absolute(main);
        }
        if let Some(toml::Value::Table(build)) = config.get_mut("build") {
            build.insert("cwd".into(), toml::Value::String(dir.display().to_string()));
            build.insert("watch_dir".into(), toml::Value::String(dir.join("src").display().to_string()));
        }
        if let Some(toml::Value::Table(assets)) = config.get_mut("assets") {
            if let Some(directory) = assets.get_mut("directory") {
                absolute(directory);
            }
        }
        config.remove("ratelimits");
        toml::to_string(&config).map_err(|e| e.to_string())
    }
}

fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `embed` paths are relative to the config file.
fn relative_to(dir: &Path, file: &Path) -> String {
    let depth = dir.components().count().saturating_sub(1);
    let file = file.to_string_lossy();
    format!("{}{}", "../".repeat(depth), file.trim_start_matches('/'))
}

/// What serves the targets.
pub enum Runtime {
    /// Bare workerd, this binary.
    Workerd(PathBuf),
    /// `wrangler dev` (this wrangler), which runs workerd twice: the Worker, and a proxy in front of it.
    WranglerDev(PathBuf),
}

/// A running runtime, in its own process group, with its own state directory; stopped and
/// cleaned up on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    pub pid: u32,
    state: PathBuf,
    /// When the process was spawned.
    pub spawned: Instant,
    /// Whether the group holds more than the one process (`wrangler dev`): its CPU is then summed.
    group: bool,
}

impl Server {
    /// Spawns the runtime and returns at once: use `wait_ready`, or connect in a loop to time a cold start.
    pub fn spawn(runtime: &Runtime, target: &Target, overrides: &[(&str, String)]) -> Result<Server, String> {
        let state = temp_dir(target.name)?;
        let started = Server::start_in(&state, runtime, target, overrides);
        if started.is_err() {
            let _ = fs::remove_dir_all(&state);
        }
        let (child, port, spawned) = started?;
        let pid = child.id();
        Ok(Server { child, port, pid, state, spawned, group: matches!(runtime, Runtime::WranglerDev(_)) })
    }

    fn start_in(state: &Path, runtime: &Runtime, target: &Target, overrides: &[(&str, String)]) -> Result<(Child, u16, Instant), String> {
        fs::create_dir_all(state.join("do")).map_err(|e| e.to_string())?;
        let port = free_port()?;
        let mut command = match runtime {
            Runtime::Workerd(workerd) => {
                let config = state.join("config.capnp");
                fs::write(&config, target.workerd_config(port, state, overrides)).map_err(|e| e.to_string())?;
                let mut command = Command::new(workerd);
                // V8's perf map and logs land in the working directory.
                command.arg("serve").arg(&config).current_dir(state);
                command
            }
            Runtime::WranglerDev(wrangler) => {
                let config = state.join("wrangler.toml");
                fs::write(&config, target.dev_config()?).map_err(|e| e.to_string())?;
                let mut command = Command::new(wrangler);
                command
                    .current_dir(state)
                    .args(["dev", "--ip", "127.0.0.1", "--port", &port.to_string(), "--log-level", "warn"])
                    .args(["--inspector-port", &free_port()?.to_string(), "--show-interactive-dev-session=false"])
                    .arg("--config")
                    .arg(&config)
                    .arg("--persist-to")
                    .arg(state.join("do"));
                for (name, value) in overrides {
                    command.arg("--var").arg(format!("{name}:{value}"));
                }
                command
            }
        };
        let log = fs::File::create(state.join("workerd.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let spawned = Instant::now();
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", command.get_program().to_string_lossy()))?;
        Ok((child, port, spawned))
    }

    /// Waits until `/health` answers 200.
    pub async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the runtime exited with {status}; log: {}", self.log_tail()));
            }
            if let Ok((200, _)) = crate::client::http_get(self.port, "/health").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("the runtime was not ready after 30 s; log: {}", self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.state.join("workerd.log")).unwrap_or_default();
        let start = log.len().saturating_sub(2000);
        log[log.floor_char_boundary(start)..].to_owned()
    }

    pub fn usage(&self) -> Usage {
        if self.group {
            Usage::of_group(self.pid)
        } else {
            Usage::of(&format!("/proc/{}", self.pid))
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let group = -(self.pid as i32);
        let keep_log = std::env::var_os("BENCH_KEEP_LOGS");
        if keep_log.is_some() {
            // A clean stop, so that workerd flushes what V8's trace flags wrote to its stdout.
            // SAFETY: kill(2) with a negative pid signals the process group we created.
            unsafe { libc::kill(group, libc::SIGINT) };
            std::thread::sleep(Duration::from_millis(500));
        }
        // SAFETY: kill(2) with a negative pid signals the process group we created.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
        if let Some(dir) = keep_log {
            let _ = fs::copy(self.state.join("workerd.log"), Path::new(&dir).join(format!("workerd-{}.log", self.pid)));
        }
        let _ = fs::remove_dir_all(&self.state);
    }
}

/// CPU time and resident memory of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu_s: f64,
    pub rss_kb: u64,
    pub at: Option<Instant>,
}

impl Usage {
    pub fn of(proc_dir: &str) -> Usage {
        let at = Some(Instant::now());
        let stat = fs::read_to_string(format!("{proc_dir}/stat")).unwrap_or_default();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
        let cpu_s = (ticks(11) + ticks(12)) as f64 / hz;
        let status = fs::read_to_string(format!("{proc_dir}/status")).unwrap_or_default();
        let rss_kb = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        Usage { cpu_s, rss_kb, at }
    }

    /// The sum over every process of group `pgid`.
    pub fn of_group(pgid: u32) -> Usage {
        let mut sum = Usage { at: Some(Instant::now()), ..Usage::default() };
        let Ok(entries) = fs::read_dir("/proc") else { return sum };
        for entry in entries.flatten() {
            let dir = entry.path();
            let stat = fs::read_to_string(dir.join("stat")).unwrap_or_default();
            // pgrp is the third field after the command name.
            let pgrp = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok());
            if pgrp == Some(pgid) {
                let one = Usage::of(&dir.to_string_lossy());
                sum.cpu_s += one.cpu_s;
                sum.rss_kb += one.rss_kb;
            }
        }
        sum
    }

    pub fn own() -> Usage {
        Usage::of("/proc/self")
    }

    /// CPU seconds spent between `earlier` and this sample, and the wall seconds between them.
    pub fn since(&self, earlier: &Usage) -> (f64, f64) {
        let wall = match (self.at, earlier.at) {
            (Some(a), Some(b)) => a.duration_since(b).as_secs_f64(),
            _ => 0.0,
        };
        (self.cpu_s - earlier.cpu_s, wall)
    }
}

/// CPU seconds the whole machine has spent busy (every process, the kernel, and time stolen by
/// the hypervisor), from /proc/stat: what is left after ours is the noise of a shared machine.
pub fn machine_busy_s() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else { return 0.0 };
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let field = |i: usize| ticks.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal: everything but idle and iowait.
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    // SAFETY: sysconf has no preconditions.
    busy as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// Storage goes to memory (tmpfs) where there is one: a disk's fsync latency would otherwise
/// bound every room that writes, and hide what the room itself costs.
fn temp_dir(label: &str) -> Result<PathBuf, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let shm = Path::new("/dev/shm");
    let parent = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    let dir = parent.join(format!(
        "edge-chat-bench-{}-{}-{label}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// `perf record` of a server for the length of a measurement, when BENCH_PERF names a
/// directory: the profile evidence in BENCHMARKS.md comes from here.
pub struct Perf(Option<Child>);

impl Perf {
    pub fn start(server: &Server, label: &str) -> Perf {
        let Some(dir) = std::env::var_os("BENCH_PERF") else { return Perf(None) };
        let _ = fs::create_dir_all(&dir);
        let output = Path::new(&dir).join(format!("{label}.data"));
        let child = Command::new("perf")
            .args(["record", "-F", "1999", "-g", "-p", &server.pid.to_string(), "-o"])
            .arg(&output)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| eprintln!("perf record: {error}"))
            .ok();
        Perf(child)
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            // SAFETY: signals the perf process we spawned; SIGINT makes it write its file.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
    }
}
