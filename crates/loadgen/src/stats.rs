//! Per-worker recording (no sharing on the hot path) merged once at the end, and the summary
//! that goes into the result files.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client::Sent;

/// Latencies in microseconds, 1 µs to 2 minutes, 3 significant figures.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

pub struct OpRecorder {
    latency: Histogram<u64>,
    /// The same latencies split by outcome (a sold-out answer should be cheaper than a win).
    by_outcome: BTreeMap<String, Histogram<u64>>,
    /// "200", or "409 COUPON_SOLD_OUT" for errors that carry a code, or "transport" for no answer.
    outcomes: BTreeMap<String, u64>,
    errors_not_problem_json: u64,
}

impl OpRecorder {
    fn new() -> Self {
        Self {
            latency: histogram(),
            by_outcome: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            errors_not_problem_json: 0,
        }
    }
}

pub struct Recorder {
    ops: BTreeMap<&'static str, OpRecorder>,
    all: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            ops: BTreeMap::new(),
            all: histogram(),
        }
    }
}

impl Recorder {
    /// Records one request under `op` and gives the answer back to the caller.
    pub fn record(&mut self, op: &'static str, sent: &Sent) {
        let entry = self.ops.entry(op).or_insert_with(OpRecorder::new);
        let outcome = match sent {
            Ok(reply) => {
                let micros = (reply.elapsed.as_micros() as u64).clamp(1, 120_000_000);
                // Values are clamped into the bounds, so recording cannot fail.
                let _ = entry.latency.record(micros);
                let _ = self.all.record(micros);
                if !reply.is_success() && !reply.problem_json {
                    entry.errors_not_problem_json += 1;
                }
                let outcome = match reply.code() {
                    Some(code) => format!("{} {code}", reply.status),
                    None => reply.status.to_string(),
                };
                let _ = entry
                    .by_outcome
                    .entry(outcome.clone())
                    .or_insert_with(histogram)
                    .record(micros);
                outcome
            }
            Err(_) => "transport".to_owned(),
        };
        *entry.outcomes.entry(outcome).or_default() += 1;
    }

    pub fn merge(&mut self, other: Recorder) {
        for (op, theirs) in other.ops {
            let mine = self.ops.entry(op).or_insert_with(OpRecorder::new);
            mine.latency.add(&theirs.latency).expect("same histogram bounds");
            for (outcome, h) in theirs.by_outcome {
                mine.by_outcome
                    .entry(outcome)
                    .or_insert_with(histogram)
                    .add(&h)
                    .expect("same histogram bounds");
            }
            mine.errors_not_problem_json += theirs.errors_not_problem_json;
            for (outcome, n) in theirs.outcomes {
                *mine.outcomes.entry(outcome).or_default() += n;
            }
        }
        self.all.add(&other.all).expect("same histogram bounds");
    }

    pub fn summary(&self, seconds: f64) -> (Latency, BTreeMap<String, OpSummary>) {
        let ops = self
            .ops
            .iter()
            .map(|(op, r)| {
                let requests: u64 = r.outcomes.values().sum();
                let summary = OpSummary {
                    requests,
                    per_second: requests as f64 / seconds.max(1e-9),
                    latency_ms: Latency::of(&r.latency),
                    latency_by_outcome_ms: r.by_outcome.iter().map(|(o, h)| (o.clone(), Latency::of(h))).collect(),
                    outcomes: r.outcomes.clone(),
                    errors_not_problem_json: r.errors_not_problem_json,
                };
                (op.to_string(), summary)
            })
            .collect();
        (Latency::of(&self.all), ops)
    }

    pub fn outcomes(&self, op: &str) -> BTreeMap<String, u64> {
        self.ops.get(op).map(|r| r.outcomes.clone()).unwrap_or_default()
    }

    pub fn requests(&self) -> u64 {
        self.ops.values().flat_map(|r| r.outcomes.values()).sum()
    }
}

/// Milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpSummary {
    pub requests: u64,
    pub per_second: f64,
    pub latency_ms: Latency,
    #[serde(default)]
    pub latency_by_outcome_ms: BTreeMap<String, Latency>,
    pub outcomes: BTreeMap<String, u64>,
    /// Error answers whose `Content-Type` was not `application/problem+json` (a contract break).
    pub errors_not_problem_json: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok,
            detail: detail.into(),
        }
    }
}

/// One scenario run: what `run` writes and `report` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub label: String,
    pub scenario: String,
    pub targets: Vec<String>,
    pub instances: usize,
    pub concurrency: usize,
    /// Scenario steps done (a checkout step is two requests: order and payment).
    pub iterations: u64,
    pub requests: u64,
    pub seconds: f64,
    pub iterations_per_second: f64,
    pub requests_per_second: f64,
    /// Over every request of the measured phase.
    pub latency_ms: Latency,
    pub ops: BTreeMap<String, OpSummary>,
    pub setup: BTreeMap<String, f64>,
    pub checks: Vec<Check>,
    pub started_at_unix: u64,
}

impl ScenarioResult {
    pub fn checks_ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The main operation of the scenario, whose throughput and latency the tables show; `None`
    /// means every request is the main operation (browse, coupon-rush) or there is none (mixed).
    pub fn headline_op(&self) -> Option<&OpSummary> {
        let name = match self.scenario.as_str() {
            "checkout" | "pay" => "order.pay",
            "popular" => "products.popular",
            "charge" => "balance.charge",
            _ => return None,
        };
        self.ops.get(name)
    }
}
