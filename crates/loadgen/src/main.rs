//! `loadgen`: load scenarios against one or several local `ecommerce` instances, the bare axum
//! baseline server, and the report that turns a run's result files into tables and charts.

mod args;
mod bare;
mod checks;
mod client;
mod report;
mod scenario;
mod sql_users;
mod stats;
mod users;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use args::Args;
use scenario::{Kind, RunOptions};
use users::UserSource;

const USAGE: &str = "\
loadgen — load generator for the ecommerce server (loopback targets only)

USAGE
  loadgen run <scenario> --target URL[,URL...] [options]
  loadgen bare-server [--addr 127.0.0.1:0] [--body-file FILE | --body-from URL] [--exit-after SECS]
  loadgen check --database-url URL [--coupon ID --requests N --coupon-total Q]
  loadgen report --results DIR [--pgbench FILE] [--pgbench-charge FILE] [--meta KEY=VALUE]... [--json FILE] [--markdown FILE] [--svg-dir DIR]

SCENARIOS
  browse       product list (1 in 5) and product pages
  popular      GET /api/v1/products/popular (after seeding a few paid orders)
  charge       balance charges, a distinct Idempotency-Key each, spread over --users
  checkout     a direct order of 1 unit of a random product, then its payment
  pay          payments only: the pending orders are made in the set-up
  coupon-rush  --requests distinct users each ask once for one coupon of --coupon-total
  draw-entries --requests distinct users each enter one draw of --coupon-total units (open an hour);
               with --draw, the entry window is then closed (in --database-url) and the draw job
               timed until the draw is DRAWN
  product-drop --requests buyers each holding a pending order of 1 unit of one product of
               --coupon-total units (made in the set-up) all pay at once; a buyer answered
               409 OUT_OF_STOCK presses pay again, up to --presses times in all
  mixed        a landing-page day: popular, product pages, lists, cart, some checkouts from the cart

RUN OPTIONS
  --target URL[,URL...]     instances, taken round-robin per request (repeatable)
  --label NAME              names the run in the tables (default: run)
  --concurrency N           workers = connections (default 64)
  --requests N              scenario steps to measure (default 2000 unless --duration)
  --duration SECS           measure for this long (not for pay and coupon-rush)
  --max-seconds SECS        hard cap on the measured phase (default 300)
  --warmup N                unmeasured steps first (default 0; never for coupon-rush)
  --users N                 users taking part (default 200; coupon-rush: one per request;
                            mixed: one per connection)
  --products N              products created for the run (default 100)
  --coupon-total Q          coupon-rush quantity, draw-entries and product-drop units
                            (default requests / 10)
  --presses N               product-drop: pay presses per buyer at most (default 3)
  --draw                    draw-entries: close the window and time the draw (needs --database-url)
  --seed-orders N           popular: paid orders made in the set-up (default 30)
  --admin-email E --admin-password P   (default: $ECOMMERCE_ADMIN_EMAIL, $ECOMMERCE_ADMIN_PASSWORD)
  --setup-concurrency N     parallel sign-ups/logins (Argon2 on the server; default 8)
  --user-prefix P           users are P0@loadgen.test, P1@… (default lg)
  --user-cache FILE         keep and reuse the users' tokens across scenarios of a run
  --users-by-sql            write the users (and their top-up: balance and CHARGE history lines)
                            straight into --database-url in batches of 2,000, with the server's
                            own Argon2id hash of the bench password, and sign their tokens here
                            with $ECOMMERCE_JWT_SECRET (the servers' secret); fresh users
                            P<run>-N each scenario, no cache. Checked before the run: one logs in,
                            a minted token answers 200 on every instance. Default: sign-ups
  --database-url URL        after the run, check the invariants in this database
  --out DIR                 write DIR/<label>-<scenario>.json
  --no-setup                make nothing (popular against the bare server)
  --no-checks               skip the database checks even with --database-url

CHECK
  Checks the invariants of DESIGN.md in the database (balances and their history, stock, one
  order.paid per paid order, coupons), and with --coupon that a rush of --requests users
  issued exactly min(requests, total). Prints one line per check (scripts/faults.sh uses it).

Exit status: 0 when every check passed, 2 when a check failed, 1 on an error.
";

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args = match Args::parse(raw) {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    if args.switch("help") || args.positional().is_empty() {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    let outcome = match args.positional()[0].as_str() {
        "run" => runtime.block_on(run(&args)),
        "bare-server" => runtime.block_on(bare_server(&args)).map(|()| ExitCode::SUCCESS),
        "report" => report(&args),
        "check" => runtime.block_on(check(&args)),
        other => Err(format!("unknown command {other}; see loadgen --help")),
    };
    outcome.unwrap_or_else(|e| fail(&e))
}

fn fail(message: &str) -> ExitCode {
    eprintln!("loadgen: {message}");
    ExitCode::FAILURE
}

/// `loadgen check`: the database invariants, one line each.
async fn check(args: &Args) -> Result<ExitCode, String> {
    args.reject_unknown(&["database-url", "coupon", "requests", "coupon-total"])?;
    let url = args.text("database-url").ok_or("check: --database-url URL")?;
    let mut checks = checks::database(&url).await;
    if let Some(coupon) = args.number::<i64>("coupon")? {
        let requests = args.number::<i64>("requests")?.ok_or("check --coupon: --requests N")?;
        let total = args
            .number::<i64>("coupon-total")?
            .ok_or("check --coupon: --coupon-total Q")?;
        checks.extend(checks::coupon_count(&url, coupon, requests, total).await);
    }
    for check in &checks {
        let mark = if check.ok { "ok  " } else { "FAIL" };
        println!("{mark} {}: {}", check.name, check.detail);
    }
    Ok(if checks.iter().all(|check| check.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

async fn run(args: &Args) -> Result<ExitCode, String> {
    args.reject_unknown(&[
        "target",
        "label",
        "concurrency",
        "requests",
        "duration",
        "max-seconds",
        "warmup",
        "users",
        "products",
        "coupon-total",
        "seed-orders",
        "admin-email",
        "admin-password",
        "setup-concurrency",
        "user-prefix",
        "user-cache",
        "database-url",
        "out",
        "no-setup",
        "no-checks",
        "presses",
        "draw",
        "users-by-sql",
    ])?;
    let name = args.positional().get(1).ok_or("run: which scenario?")?;
    let kind = Kind::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown scenario {name}; one of {}", names.join(", "))
    })?;
    let requests: Option<u64> = args.number("requests")?;
    let admin_email = args
        .text("admin-email")
        .or_else(|| std::env::var("ECOMMERCE_ADMIN_EMAIL").ok());
    let admin_password = args
        .text("admin-password")
        .or_else(|| std::env::var("ECOMMERCE_ADMIN_PASSWORD").ok());
    // --no-checks drops the checks, not the database the users are written to.
    let sql_users = if args.switch("users-by-sql") {
        Some(sql_users::SqlUsers {
            database_url: args
                .text("database-url")
                .ok_or("--users-by-sql needs --database-url (the servers' DATABASE_URL)")?,
            jwt_secret: std::env::var("ECOMMERCE_JWT_SECRET").unwrap_or_default(),
        })
    } else {
        None
    };
    let opts = RunOptions {
        kind,
        label: args.text("label").unwrap_or_else(|| "run".into()),
        targets: args.list("target"),
        concurrency: args.number_or("concurrency", 64)?,
        requests,
        duration: args.number::<f64>("duration")?.map(Duration::from_secs_f64),
        max_seconds: args.number_or("max-seconds", 300)?,
        warmup: args.number_or("warmup", 0)?,
        users: args.number_or("users", 200)?,
        products: args.number_or("products", 100)?,
        coupon_total: args.number_or("coupon-total", (requests.unwrap_or(2_000) / 10).max(1) as i64)?,
        seed_orders: args.number_or("seed-orders", 30)?,
        admin: admin_email.zip(admin_password),
        setup: !args.switch("no-setup"),
        setup_concurrency: args.number_or("setup-concurrency", 8)?,
        user_source: UserSource {
            prefix: args.text("user-prefix").unwrap_or_else(|| "lg".into()),
            concurrency: args.number_or("setup-concurrency", 8)?,
            cache: args.text("user-cache").map(PathBuf::from),
            sql: sql_users,
        },
        database_url: if args.switch("no-checks") {
            None
        } else {
            args.text("database-url")
        },
        out_dir: args.text("out").map(PathBuf::from),
        presses: args.number_or("presses", 3)?,
        draw: args.switch("draw"),
    };
    if opts.concurrency == 0 || opts.products == 0 || opts.users == 0 {
        return Err("--concurrency, --users and --products must be positive".into());
    }
    let out_dir = opts.out_dir.clone();
    let result = scenario::run(opts).await?;
    eprintln!(
        "{} {}: {} steps, {} requests in {:.1} s = {:.0} req/s; p50 {:.2} ms, p99 {:.2} ms",
        result.label,
        result.scenario,
        result.iterations,
        result.requests,
        result.seconds,
        result.requests_per_second,
        result.latency_ms.p50,
        result.latency_ms.p99
    );
    for (op, summary) in &result.ops {
        eprintln!(
            "  {op}: {:.0}/s p50 {:.2} ms p99 {:.2} ms {:?}",
            summary.per_second, summary.latency_ms.p50, summary.latency_ms.p99, summary.outcomes
        );
    }
    for check in &result.checks {
        eprintln!(
            "  [{}] {}: {}",
            if check.ok { "ok" } else { "FAILED" },
            check.name,
            check.detail
        );
    }
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("{}-{}.json", result.label, result.scenario));
        let text = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
        std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!("{}", report::markdown_row(&result));
    Ok(if result.checks_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

async fn bare_server(args: &Args) -> Result<(), String> {
    args.reject_unknown(&["addr", "body-file", "body-from", "exit-after"])?;
    let body = bare::load_body(args.text("body-file"), args.text("body-from")).await?;
    bare::serve(bare::BareOptions {
        addr: args.text("addr").unwrap_or_else(|| "127.0.0.1:0".into()),
        body,
        exit_after: Duration::from_secs(args.number_or("exit-after", 1_800)?),
    })
    .await
}

fn report(args: &Args) -> Result<ExitCode, String> {
    args.reject_unknown(&[
        "results",
        "pgbench",
        "pgbench-charge",
        "meta",
        "json",
        "markdown",
        "svg-dir",
    ])?;
    let meta = args
        .values_of("meta")
        .into_iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("--meta {kv}: not KEY=VALUE"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let report = report::run(report::ReportOptions {
        results: PathBuf::from(args.text("results").ok_or("report needs --results DIR")?),
        pgbench: args.text("pgbench").map(PathBuf::from),
        pgbench_charge: args.text("pgbench-charge").map(PathBuf::from),
        meta,
        json: args.text("json").map(PathBuf::from),
        markdown: args.text("markdown").map(PathBuf::from),
        svg_dir: args.text("svg-dir").map(PathBuf::from),
    })?;
    Ok(if report.all_checks_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
