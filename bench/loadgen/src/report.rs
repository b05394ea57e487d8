//! Figures, the table, and the JSON file.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// Context, not a score (the harness's own CPU, counts that must be zero...).
    Neither,
}

#[derive(Debug, Clone)]
pub struct Figure {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub better: Better,
    /// NaN where a target has no such figure (a JS fixture has no WASM).
    pub value: f64,
    /// Every round's value, when the figure is a median over rounds.
    pub rounds: Vec<f64>,
}

/// What one scenario measured on one target.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub figures: Vec<Figure>,
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn add(&mut self, key: &'static str, label: &'static str, unit: &'static str, better: Better, value: f64) {
        self.figures.push(Figure { key, label, unit, better, value, rounds: Vec::new() });
    }

    /// A figure measured several times: the median, with every value kept.
    pub fn add_rounds(&mut self, key: &'static str, label: &'static str, unit: &'static str, better: Better, values: &mut [f64]) {
        let rounds = values.to_vec();
        let value = crate::scenarios::median(values);
        self.figures.push(Figure { key, label, unit, better, value, rounds });
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

/// One scenario across every target.
pub struct Section {
    pub id: String,
    pub title: String,
    pub params: String,
    /// Target name to what it measured (or why it failed).
    pub results: Vec<(String, Result<Outcome, String>)>,
}

pub struct Report {
    pub targets: Vec<String>,
    pub sections: Vec<Section>,
    pub meta: Map<String, Value>,
}

/// A Rust figure over a reference figure.
fn ratio(rust: f64, other: f64) -> f64 {
    if rust.is_finite() && other.is_finite() && other != 0.0 {
        rust / other
    } else {
        f64::NAN
    }
}

fn number(value: f64) -> String {
    if !value.is_finite() {
        "-".into()
    } else if value.abs() >= 10_000.0 {
        format!("{value:.0}")
    } else if value.abs() >= 100.0 {
        format!("{value:.1}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

impl Section {
    /// Figure keys in first-seen order, with their descriptions.
    fn figure_rows(&self) -> Vec<Figure> {
        let mut rows: Vec<Figure> = Vec::new();
        for (_, result) in &self.results {
            for figure in result.iter().flat_map(|o| &o.figures) {
                if !rows.iter().any(|r| r.key == figure.key) {
                    rows.push(figure.clone());
                }
            }
        }
        rows
    }

    pub fn value(&self, target: &str, key: &str) -> f64 {
        self.results
            .iter()
            .find(|(name, _)| name == target)
            .and_then(|(_, result)| result.as_ref().ok())
            .and_then(|outcome| outcome.figures.iter().find(|f| f.key == key))
            .map_or(f64::NAN, |f| f.value)
    }
}

impl Report {
    /// The ratio columns: Rust over every other target, then batched delivery over the others.
    fn comparisons(&self) -> Vec<(&str, &str)> {
        let mut pairs: Vec<(&str, &str)> =
            self.targets.iter().skip(1).filter(|t| *t != "batched").map(|t| ("rust", t.as_str())).collect();
        if self.targets.iter().any(|t| t == "batched") {
            pairs.extend(self.targets.iter().filter(|t| *t != "batched").map(|t| ("batched", t.as_str())));
        }
        pairs
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut header = format!("{:<44} {:>6}", "scenario / figure", "unit");
        for target in &self.targets {
            header += &format!(" {target:>10}");
        }
        for (num, den) in self.comparisons() {
            header += &format!(" {:>10}", format!("{}/{}", short(num), short(den)));
        }
        out += &header;
        out.push('\n');
        out += &"-".repeat(header.len());
        out.push('\n');
        for section in &self.sections {
            out += &format!("{}  [{}]\n", section.title, section.params);
            for row in section.figure_rows() {
                let arrow = match row.better {
                    Better::Higher => " ↑",
                    Better::Lower => " ↓",
                    Better::Neither => "",
                };
                let mut line = format!("  {:<42} {:>6}", format!("{}{arrow}", row.label), row.unit);
                for target in &self.targets {
                    line += &format!(" {:>10}", number(section.value(target, row.key)));
                }
                for (num, den) in self.comparisons() {
                    let r = if row.better == Better::Neither {
                        f64::NAN
                    } else {
                        ratio(section.value(num, row.key), section.value(den, row.key))
                    };
                    line += &format!(" {:>10}", if r.is_finite() { format!("{r:.2}x") } else { "-".into() });
                }
                out += &line;
                out.push('\n');
            }
            for (target, result) in &section.results {
                match result {
                    Err(error) => out += &format!("  ! {target} failed: {error}\n"),
                    Ok(outcome) => {
                        for note in &outcome.notes {
                            out += &format!("  ! {target}: {note}\n");
                        }
                    }
                }
            }
        }
        out
    }

    /// The targets, each with the Rust figure (or Rust/JS ratio) and whether it is met.
    fn goals(&self) -> Vec<Goal> {
        let section = |id: &str| self.sections.iter().find(|s| s.id == id);
        let value = |id: &str, target: &str, key: &str| section(id).map_or(f64::NAN, |s| s.value(target, key));
        let ratio = |id: &str, key: &str| ratio(value(id, "rust", key), value(id, "reference", key));
        let mut goals = vec![
            Goal::new("fan-out throughput at 100 clients, Rust/JS", ratio("fanout-100", "deliveries_per_s"), "x", 0.9, true),
            Goal::new("CPU per delivery at 100 clients, Rust/JS", ratio("fanout-100", "cpu_per_10k"), "x", 1.1, false),
            Goal::new("latency p99 under load, Rust/JS", ratio("latency", "p99_ms"), "x", 1.2, false),
            Goal::new("WASM gzipped", value("start", "rust", "wasm_gz_kb"), "KB", 250.0, false),
            Goal::new("runtime start to first welcome", value("start", "rust", "start_to_welcome_ms"), "ms", 100.0, false),
        ];
        // Memory is "flat" when a thousand sockets that came and went leave less behind than a
        // tenth of what a thousand live sockets hold, and when the second half of the messages
        // adds less than a quarter of what the first half did (a leak adds as much again).
        let memory = |key: &str| value("memory", "rust", key);
        let near = 0.1 * memory("rss_per_1000_idle_mb");
        goals.push(Goal::new("idle sockets: resident above base once closed", memory("rss_after_close_1_mb"), "MB", near, false));
        let cycles = memory("rss_after_close_3_mb") - memory("rss_after_close_1_mb");
        goals.push(Goal::new("... growth over two more cycles of 1,000", cycles, "MB", near, false));
        let first_half = memory("rss_messages_first_half_mb");
        goals.push(Goal::new("messages: growth over the second half", memory("rss_messages_growth_mb"), "MB", 0.25 * first_half, false));
        // Issue 13: batched delivery against the floor and the JS reference, size, start, storms.
        let over = |id: &str, num: &str, den: &str, key: &str| self::ratio(value(id, num, key), value(id, den, key));
        let more = |id: &str, key: &str| value(id, "batched", key) - value(id, "rust", key);
        goals.extend([
            Goal::new("batched fan-out at 100 clients / floor", over("fanout-100", "batched", "floor", "deliveries_per_s"), "x", 2.5, true),
            Goal::new("batched fan-out at 100 clients / JS", over("fanout-100", "batched", "reference", "deliveries_per_s"), "x", 2.5, true),
            Goal::new("batched CPU per delivery at 100 clients / floor", over("fanout-100", "batched", "floor", "cpu_per_10k"), "x", 0.4, false),
            Goal::new("batched fan-out at 10 clients / floor", over("fanout-10", "batched", "floor", "deliveries_per_s"), "x", 1.5, true),
            Goal::new("batched fan-out at 1,000 clients / floor", over("fanout-1000", "batched", "floor", "deliveries_per_s"), "x", 1.5, true),
            Goal::new("batched, 100 rooms of 10 / floor", over("rooms", "batched", "floor", "deliveries_per_s"), "x", 1.5, true),
            Goal::new("latency p50 under light load, batched - unbatched", more("latency", "p50_ms"), "ms", 0.5, false),
            Goal::new("latency p99 under light load, batched - unbatched", more("latency", "p99_ms"), "ms", 0.5, false),
            Goal::new("WASM gzipped (issue 13)", value("start", "rust", "wasm_gz_kb"), "KB", 150.0, false),
            Goal::new("start to first welcome, Rust/JS", ratio("start", "start_to_welcome_ms"), "x", 1.2, false),
            Goal::new("join storm, batched: joins per second", value("storm", "batched", "joins_per_s"), "/s", 420.0, true),
            Goal::new("join storm, batched: time to welcome p99", value("storm", "batched", "welcome_p99_ms"), "ms", 2000.0, false),
            Goal::new("stalls, 1 room of 100, batched: slowest delivery", value("stall-1x100", "batched", "max_ms"), "ms", 1000.0, false),
            Goal::new("stalls, 20 rooms of 10, batched: slowest delivery", value("stall-20x10", "batched", "max_ms"), "ms", 1000.0, false),
        ]);
        goals.retain(|g| g.value.is_finite());
        goals
    }

    pub fn goals_table(&self) -> String {
        let goals = self.goals();
        if goals.is_empty() {
            return String::new();
        }
        let mut out = String::from("targets (issues 4 and 13)\n");
        for goal in goals {
            let verdict = if goal.met() { "met" } else { "MISSED" };
            let sign = if goal.at_least { ">=" } else { "<=" };
            out += &format!(
                "  {:<50} {:>9} {:<3} goal {sign} {:<8} {verdict}\n",
                goal.label,
                number(goal.value),
                goal.unit,
                number(goal.goal)
            );
        }
        out
    }

    pub fn json(&self) -> Value {
        let sections: Vec<Value> = self
            .sections
            .iter()
            .map(|section| {
                let mut targets = Map::new();
                for (name, result) in &section.results {
                    let value = match result {
                        Ok(outcome) => {
                            let figures: Map<String, Value> = outcome
                                .figures
                                .iter()
                                .map(|f| (f.key.to_owned(), finite(f.value)))
                                .collect();
                            let rounds: Map<String, Value> = outcome
                                .figures
                                .iter()
                                .filter(|f| f.rounds.len() > 1)
                                .map(|f| (f.key.to_owned(), Value::Array(f.rounds.iter().map(|&v| finite(v)).collect())))
                                .collect();
                            json!({ "figures": figures, "rounds": rounds, "notes": outcome.notes })
                        }
                        Err(error) => json!({ "error": error }),
                    };
                    targets.insert(name.clone(), value);
                }
                let mut figures = BTreeMap::new();
                for row in section.figure_rows() {
                    let ratios: Map<String, Value> = self
                        .comparisons()
                        .into_iter()
                        .map(|(num, den)| {
                            let r = ratio(section.value(num, row.key), section.value(den, row.key));
                            (format!("{num}_over_{den}"), finite(r))
                        })
                        .collect();
                    figures.insert(
                        row.key,
                        json!({
                            "label": row.label,
                            "unit": row.unit,
                            "better": format!("{:?}", row.better).to_lowercase(),
                            "ratios": ratios,
                        }),
                    );
                }
                json!({
                    "id": section.id,
                    "title": section.title,
                    "params": section.params,
                    "figures": figures,
                    "targets": targets,
                })
            })
            .collect();
        let goals: Vec<Value> = self
            .goals()
            .iter()
            .map(|g| json!({ "target": g.label, "value": g.value, "unit": g.unit, "goal": g.goal, "at_least": g.at_least, "met": g.met() }))
            .collect();
        json!({ "meta": self.meta, "targets": self.targets, "goals": goals, "sections": sections })
    }
}

struct Goal {
    label: &'static str,
    value: f64,
    unit: &'static str,
    goal: f64,
    /// The value must be at least the goal (else at most).
    at_least: bool,
}

impl Goal {
    fn new(label: &'static str, value: f64, unit: &'static str, goal: f64, at_least: bool) -> Goal {
        Goal { label, value, unit, goal, at_least }
    }

    fn met(&self) -> bool {
        if self.at_least {
            self.value >= self.goal
        } else {
            self.value <= self.goal
        }
    }
}

fn short(target: &str) -> &str {
    match target {
        "reference" => "js",
        "batched" => "batch",
        other => other,
    }
}

fn finite(value: f64) -> Value {
    if value.is_finite() {
        json!(value)
    } else {
        Value::Null
    }
}
