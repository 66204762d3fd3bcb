//! Gathers the result files of one run with its baselines into `bench-results.json`, the tables
//! between the markers of `BENCHMARKS.md`, and two hand-written SVG charts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::stats::ScenarioResult;

pub const START_MARKER: &str = "<!-- bench:results:start -->";
pub const END_MARKER: &str = "<!-- bench:results:end -->";
/// The label of runs against the bare axum baseline.
pub const BARE_LABEL: &str = "bare";

pub struct ReportOptions {
    pub results: PathBuf,
    pub pgbench: Option<PathBuf>,
    /// pgbench's output on the charge's own SQL (`bench/pgbench-charge.sql`).
    pub pgbench_charge: Option<PathBuf>,
    pub meta: Vec<(String, String)>,
    pub json: Option<PathBuf>,
    pub markdown: Option<PathBuf>,
    pub svg_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pgbench {
    pub tps: f64,
    pub latency_average_ms: Option<f64>,
    pub transactions: Option<u64>,
    pub failed: Option<u64>,
    pub command: Option<String>,
}

/// Reads what `pgbench` prints (the summary lines are stable across versions 13..17).
pub fn parse_pgbench(text: &str) -> Option<Pgbench> {
    let number = |line: &str, prefix: &str| -> Option<f64> {
        line.trim()
            .strip_prefix(prefix)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let mut out = Pgbench::default();
    let mut found = false;
    for line in text.lines() {
        if let Some(tps) = number(line, "tps =") {
            out.tps = tps;
            found = true;
        } else if let Some(ms) = number(line, "latency average =") {
            out.latency_average_ms = Some(ms);
        } else if let Some(n) = number(line, "number of transactions actually processed:") {
            out.transactions = Some(n as u64);
        } else if let Some(n) = number(line, "number of failed transactions:") {
            out.failed = Some(n as u64);
        } else if let Some(cmd) = line.trim().strip_prefix("# command:") {
            out.command = Some(cmd.trim().to_owned());
        }
    }
    found.then_some(out)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ratio {
    pub measure: String,
    pub value: f64,
    pub unit: String,
    pub baseline: String,
    pub baseline_value: f64,
    pub ratio: f64,
    pub target: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub generated_at: String,
    pub meta: BTreeMap<String, String>,
    pub pgbench_payment: Option<Pgbench>,
    #[serde(default)]
    pub pgbench_charge: Option<Pgbench>,
    pub ratios: Vec<Ratio>,
    pub all_checks_passed: bool,
    pub results: Vec<ScenarioResult>,
}

/// UTC date and time from Unix seconds (days-from-civil inverse, Howard Hinnant's algorithm).
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn read_results(dir: &Path) -> Result<Vec<ScenarioResult>, String> {
    let mut results = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // Other JSON files (the user cache, captured bodies) live beside the results.
        if let Ok(result) = serde_json::from_str::<ScenarioResult>(&text) {
            results.push(result);
        }
    }
    results.sort_by_key(|r| r.started_at_unix);
    Ok(results)
}

fn ratios(results: &[ScenarioResult], pgbench: Option<&Pgbench>, charge: Option<&Pgbench>) -> Vec<Ratio> {
    let mut out = Vec::new();
    let bare = results
        .iter()
        .find(|r| r.label == BARE_LABEL && r.scenario == "popular");
    for r in results.iter().filter(|r| r.label != BARE_LABEL) {
        match (r.scenario.as_str(), bare, pgbench) {
            ("popular" | "browse", Some(bare), _) => out.push(Ratio {
                measure: format!("{} {} (C={})", r.label, r.scenario, r.concurrency),
                value: r.requests_per_second,
                unit: "req/s".into(),
                baseline: format!("bare axum, same bytes (C={})", bare.concurrency),
                baseline_value: bare.requests_per_second,
                ratio: r.requests_per_second / bare.requests_per_second.max(1e-9),
                target: "close to 1".into(),
            }),
            ("charge", _, _) if r.label.contains("pg") && charge.is_some() => {
                let pg = charge.map_or(0.0, |c| c.tps);
                out.push(Ratio {
                    measure: format!("{} charge (C={}, charges)", r.label, r.concurrency),
                    value: r.requests_per_second,
                    unit: "charges/s".into(),
                    baseline: "pgbench, charge SQL".into(),
                    baseline_value: pg,
                    ratio: r.requests_per_second / pg.max(1e-9),
                    target: "≥ 0.6, p99 < 50 ms".into(),
                });
            }
            ("pay" | "checkout", _, Some(pg)) if r.label.contains("pg") => {
                let pays = r.ops.get("order.pay").map_or(0.0, |o| o.per_second);
                out.push(Ratio {
                    measure: format!("{} {} (C={}, payments)", r.label, r.scenario, r.concurrency),
                    value: pays,
                    unit: "payments/s".into(),
                    baseline: "pgbench, payment SQL".into(),
                    baseline_value: pg.tps,
                    ratio: pays / pg.tps.max(1e-9),
                    target: if r.scenario == "pay" {
                        "close to 1".into()
                    } else {
                        "≈ 0.5 (two transactions a step)".into()
                    },
                });
            }
            _ => {}
        }
    }
    out.extend(replica_ratios(results));
    out
}

/// `bench/run.sh --modes pg3r` labels its browse runs `pg-3-r<replicas>`, repeats `-2`, `-3`…
fn replica_count(label: &str) -> Option<u32> {
    let rest = label.strip_prefix("pg-3-r")?;
    let count = rest.split('-').next()?;
    count.parse().ok()
}

/// Replica scaling: the mean browse req/s with one replica over none, two over one.
fn replica_ratios(results: &[ScenarioResult]) -> Vec<Ratio> {
    let mean = |replicas: u32| -> Option<(f64, usize)> {
        let rates: Vec<f64> = results
            .iter()
            .filter(|r| r.scenario == "browse" && replica_count(&r.label) == Some(replicas))
            .map(|r| r.requests_per_second)
            .collect();
        (!rates.is_empty()).then(|| (rates.iter().sum::<f64>() / rates.len() as f64, rates.len()))
    };
    let runs = |n: usize| {
        if n == 1 {
            "1 run".to_owned()
        } else {
            format!("mean of {n} runs")
        }
    };
    let mut out = Vec::new();
    for (more, fewer, target) in [
        (1, 0, "> 1 (reads leave the primary)"),
        (2, 1, "> 1 (two replicas serve more than one)"),
    ] {
        if let (Some((value, n)), Some((baseline, m))) = (mean(more), mean(fewer)) {
            out.push(Ratio {
                measure: format!("pg-3 browse, catalog cache off, {more} read replica(s) ({})", runs(n)),
                value,
                unit: "req/s".into(),
                baseline: format!("the same with {fewer} ({})", runs(m)),
                baseline_value: baseline,
                ratio: value / baseline.max(1e-9),
                target: target.into(),
            });
        }
    }
    out
}

fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The table row `run` prints for one result.
pub fn markdown_row(r: &ScenarioResult) -> String {
    let (op_rate, op_p50, op_p99) = match r.headline_op() {
        Some(op) => (thousands(op.per_second), ms(op.latency_ms.p50), ms(op.latency_ms.p99)),
        None => (
            thousands(r.requests_per_second),
            ms(r.latency_ms.p50),
            ms(r.latency_ms.p99),
        ),
    };
    let failed: Vec<&str> = r.checks.iter().filter(|c| !c.ok).map(|c| c.name.as_str()).collect();
    let checks = if failed.is_empty() {
        format!("{} ok", r.checks.len())
    } else {
        format!("FAILED: {}", failed.join("; "))
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        r.label,
        r.scenario,
        r.instances,
        r.concurrency,
        thousands(r.iterations as f64),
        thousands(r.requests_per_second),
        ms(r.latency_ms.p50),
        ms(r.latency_ms.p99),
        op_rate,
        format_args!("{op_p50} / {op_p99}"),
        checks,
    )
}

pub const TABLE_HEADER: &str = "| setup | scenario | instances | connections | steps | req/s | p50 ms | p99 ms | main op/s | main op p50 / p99 ms | checks |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|";

fn outcomes_line(r: &ScenarioResult) -> String {
    let mut parts = Vec::new();
    for (op, summary) in &r.ops {
        let outcomes: Vec<String> = summary
            .outcomes
            .iter()
            .map(|(o, n)| match summary.latency_by_outcome_ms.get(o) {
                Some(l) => format!(
                    "{o} ×{} (p50 {} / p99 {} ms)",
                    thousands(*n as f64),
                    ms(l.p50),
                    ms(l.p99)
                ),
                None => format!("{o} ×{}", thousands(*n as f64)),
            })
            .collect();
        parts.push(format!("`{op}` {}", outcomes.join(", ")));
    }
    format!("- **{} {}**: {}", r.label, r.scenario, parts.join("; "))
}

fn markdown(report: &Report) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "Generated {} by `bench/run.sh`.", report.generated_at);
    for (k, v) in &report.meta {
        let _ = writeln!(md, "- {k}: {v}");
    }
    let _ = writeln!(
        md,
        "\n### Baselines (same run)\n\n| baseline | throughput | latency |\n|---|---:|---:|"
    );
    if let Some(bare) = report.results.iter().find(|r| r.label == BARE_LABEL) {
        let _ = writeln!(
            md,
            "| bare axum, fixed bytes of a real `/products/popular` answer, loadgen C={} | {} req/s | p50 {} / p99 {} ms |",
            bare.concurrency,
            thousands(bare.requests_per_second),
            ms(bare.latency_ms.p50),
            ms(bare.latency_ms.p99)
        );
    }
    if let Some(pg) = &report.pgbench_payment {
        let latency = pg
            .latency_average_ms
            .map_or("–".to_owned(), |l| format!("mean {} ms", ms(l)));
        let _ = writeln!(
            md,
            "| pgbench, the payment's SQL (`bench/pgbench-payment.sql`, -c 64 -j 2 -T 10) | {} tps | {latency} |",
            thousands(pg.tps)
        );
    }
    if let Some(pg) = &report.pgbench_charge {
        let latency = pg
            .latency_average_ms
            .map_or("–".to_owned(), |l| format!("mean {} ms", ms(l)));
        let _ = writeln!(
            md,
            "| pgbench, the charge's SQL (`bench/pgbench-charge.sql`, -c 64 -j 2 -T 10) | {} tps | {latency} |",
            thousands(pg.tps)
        );
    }
    let _ = writeln!(md, "\n### Scenarios\n\n{TABLE_HEADER}");
    for r in report.results.iter() {
        let _ = writeln!(md, "{}", markdown_row(r));
    }
    if !report.ratios.is_empty() {
        let _ = writeln!(
            md,
            "\n### Ratios against the baselines\n\n| measure | value | baseline | ratio | target |\n|---|---:|---|---:|---|"
        );
        for r in &report.ratios {
            let _ = writeln!(
                md,
                "| {} | {} {} | {} ({}) | {:.2} | {} |",
                r.measure,
                thousands(r.value),
                r.unit,
                r.baseline,
                thousands(r.baseline_value),
                r.ratio,
                r.target
            );
        }
    }
    let _ = writeln!(md, "\n### Answers per operation\n");
    for r in &report.results {
        let _ = writeln!(md, "{}", outcomes_line(r));
    }
    let failed: Vec<String> = report
        .results
        .iter()
        .flat_map(|r| {
            r.checks
                .iter()
                .filter(|c| !c.ok)
                .map(move |c| format!("- **{} {}**: {} — {}", r.label, r.scenario, c.name, c.detail))
        })
        .collect();
    let total: usize = report.results.iter().map(|r| r.checks.len()).sum();
    let _ = writeln!(md, "\n### Checks\n");
    if failed.is_empty() {
        let _ = writeln!(md, "All {total} checks passed.");
    } else {
        let _ = writeln!(
            md,
            "{} of {total} checks FAILED:\n\n{}",
            failed.len(),
            failed.join("\n")
        );
    }
    let _ = writeln!(
        md,
        "\n![throughput](bench-throughput.svg)\n\n![latency](bench-latency.svg)"
    );
    md
}

/// Replaces the text between the markers, keeping everything else of the file.
pub fn rewrite_between_markers(path: &Path, body: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let start = text
        .find(START_MARKER)
        .ok_or_else(|| format!("{}: no {START_MARKER}", path.display()))?;
    let end = text
        .find(END_MARKER)
        .ok_or_else(|| format!("{}: no {END_MARKER}", path.display()))?;
    if end < start {
        return Err(format!("{}: markers out of order", path.display()));
    }
    let new = format!("{}{START_MARKER}\n{body}{}", &text[..start], &text[end..]);
    std::fs::write(path, new).map_err(|e| format!("{}: {e}", path.display()))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

const LEFT: f64 = 230.0;
const WIDTH: f64 = 900.0;
const ROW: f64 = 24.0;
const TOP: f64 = 46.0;

fn svg_open(out: &mut String, height: f64, title: &str) {
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = writeln!(
        out,
        r#"<text x="10" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
}

fn row_label(r: &ScenarioResult) -> String {
    format!("{} · {} (C={})", r.label, r.scenario, r.concurrency)
}

/// Horizontal bars of requests per second, linear scale.
pub fn throughput_svg(results: &[ScenarioResult]) -> String {
    let plot = WIDTH - LEFT - 90.0;
    let max = results.iter().map(|r| r.requests_per_second).fold(1.0, f64::max);
    let height = TOP + ROW * results.len() as f64 + 30.0;
    let mut out = String::new();
    svg_open(
        &mut out,
        height,
        "Throughput (requests/s, all requests of the measured phase)",
    );
    for (i, r) in results.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let w = (r.requests_per_second / max * plot).max(1.0);
        let colour = if r.label == BARE_LABEL {
            "#888888"
        } else if r.checks_ok() {
            "#3b6ea8"
        } else {
            "#c0392b"
        };
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + 15.0,
            escape(&row_label(r))
        );
        let _ = writeln!(
            out,
            r#"<rect x="{LEFT}" y="{}" width="{w:.1}" height="{}" fill="{colour}"/>"#,
            y + 3.0,
            ROW - 6.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}">{}</text>"#,
            LEFT + w + 5.0,
            y + 15.0,
            thousands(r.requests_per_second)
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="10" y="{}" fill="#555555">grey: baseline; red: a check failed</text>"##,
        height - 10.0
    );
    out.push_str("</svg>\n");
    out
}

/// p50 and p99 per result on a log scale (decades from 0.1 ms).
pub fn latency_svg(results: &[ScenarioResult]) -> String {
    let plot = WIDTH - LEFT - 90.0;
    let max = results.iter().map(|r| r.latency_ms.p99).fold(1.0, f64::max);
    let low = 0.1f64;
    let high = 10f64.powf(max.log10().ceil()).max(1.0);
    let x = |v: f64| LEFT + (v.max(low).log10() - low.log10()) / (high.log10() - low.log10()) * plot;
    let height = TOP + ROW * results.len() as f64 + 50.0;
    let mut out = String::new();
    svg_open(
        &mut out,
        height,
        "Latency per request (ms, log scale): p50 light, p99 dark",
    );
    let mut tick = low;
    while tick <= high * 1.0001 {
        let tx = x(tick);
        let _ = writeln!(
            out,
            r##"<line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{}" stroke="#dddddd"/>"##,
            TOP - 4.0,
            height - 40.0
        );
        let _ = writeln!(
            out,
            r##"<text x="{tx:.1}" y="{}" text-anchor="middle" fill="#555555">{} ms</text>"##,
            height - 26.0,
            if tick < 1.0 {
                format!("{tick:.1}")
            } else {
                format!("{tick:.0}")
            }
        );
        tick *= 10.0;
    }
    for (i, r) in results.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + 15.0,
            escape(&row_label(r))
        );
        let p99 = x(r.latency_ms.p99) - LEFT;
        let p50 = x(r.latency_ms.p50) - LEFT;
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{}" width="{:.1}" height="{}" fill="#1f4e79"/>"##,
            y + 3.0,
            p99.max(1.0),
            ROW - 6.0
        );
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{}" width="{:.1}" height="{}" fill="#9dc3e6"/>"##,
            y + 3.0,
            p50.max(1.0),
            ROW - 6.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}">{} / {}</text>"#,
            LEFT + p99.max(1.0) + 5.0,
            y + 15.0,
            ms(r.latency_ms.p50),
            ms(r.latency_ms.p99)
        );
    }
    out.push_str("</svg>\n");
    out
}

pub fn run(opts: ReportOptions) -> Result<Report, String> {
    let results = read_results(&opts.results)?;
    if results.is_empty() {
        return Err(format!("no result files in {}", opts.results.display()));
    }
    let read_pgbench = |file: &Option<PathBuf>| -> Result<Option<Pgbench>, String> {
        match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(Some(
                    parse_pgbench(&text).ok_or_else(|| format!("{}: no tps line", path.display()))?,
                ))
            }
            None => Ok(None),
        }
    };
    let pgbench_payment = read_pgbench(&opts.pgbench)?;
    let pgbench_charge = read_pgbench(&opts.pgbench_charge)?;
    let report = Report {
        generated_at: utc(crate::users::now_unix()),
        meta: opts.meta.into_iter().collect(),
        ratios: ratios(&results, pgbench_payment.as_ref(), pgbench_charge.as_ref()),
        pgbench_payment,
        pgbench_charge,
        all_checks_passed: results.iter().all(ScenarioResult::checks_ok),
        results,
    };
    if let Some(path) = &opts.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(dir) = &opts.svg_dir {
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"));
        write("bench-throughput.svg", throughput_svg(&report.results))?;
        write("bench-latency.svg", latency_svg(&report.results))?;
    }
    let md = markdown(&report);
    match &opts.markdown {
        Some(path) => rewrite_between_markers(path, &md)?,
        None => print!("{md}"),
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_runs_are_told_by_their_label() {
        assert_eq!(replica_count("pg-3-r0"), Some(0));
        assert_eq!(replica_count("pg-3-r2"), Some(2));
        assert_eq!(replica_count("pg-3-r1-2"), Some(1));
        assert_eq!(replica_count("pg-3"), None);
        assert_eq!(replica_count("sqlite-1"), None);
    }
}
