//! Benchmark of an ops-win report (`cargo bench --bench report`): for before/after
//! aggregates of 1,000, 10,000 and 50,000 distinct stacks, the median time of each
//! stage a win goes through on the server: the figures (`report::compute`), inferno's
//! differential SVG, resvg's PNG, and the HTML/text rendering plus the MIME message.
//! Also the PNG's size, which goes into every email.
//!
//! Stacks are 8 to 40 frames deep, grown as a call tree with shared prefixes over 2,000
//! function names; sample counts are Zipf-like (a few hot stacks, many rare ones). The
//! after side is the before side with the hottest 5% of stacks cut to a tenth.

use hotframe::cost::{CostContext, CostSettings};
use hotframe::model::ThreadState;
use hotframe::model::{Aggregate, AggregateSample};
use hotframe::report::{self, Selection, Side, Win, WinOptions};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const RUNS: usize = 7;
const PERIOD_NS: u64 = 10_000_000;

fn aggregate(stacks: usize, seed: u64, cut_hot: bool) -> Aggregate {
    let mut rng = fastrand::Rng::with_seed(seed);
    let frames: Vec<String> =
        (0..2_000).map(|i| format!("svc::module{}::Type{}::method_{i}", i % 37, i % 101)).collect();
    let mut agg = Aggregate {
        frames,
        profiles: 2,
        first_ms: 1_795_700_000_000,
        last_ms: 1_795_700_600_000,
        ..Default::default()
    };
    for host in ["a", "b"] {
        agg.coverage.add(Some(host), agg.first_ms, agg.last_ms);
    }
    let mut stack_rng = fastrand::Rng::with_seed(42);
    for i in 0..stacks {
        // A parent prefix from an earlier stack keeps the tree shape of a real service.
        let mut stack: Vec<u32> = if i > 0 && stack_rng.bool() {
            let parent = &agg.stacks[stack_rng.usize(..i)];
            parent[..stack_rng.usize(1..=parent.len())].to_vec()
        } else {
            vec![0]
        };
        let depth = stack_rng.usize(8..=40);
        while stack.len() < depth {
            stack.push(stack_rng.u32(1..2_000));
        }
        agg.stacks.push(stack);
        let mut samples = (100_000.0 / (i as f64 + 1.0).powf(1.1)).ceil() as u64 + rng.u64(0..3);
        if cut_hot && i < stacks / 20 {
            samples = samples / 10 + 1;
        }
        agg.samples.push(AggregateSample {
            stack: i as u32,
            state: ThreadState::Runnable,
            samples,
            nanos: samples * PERIOD_NS,
        });
    }
    agg
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn time<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let started = Instant::now();
        let out = f();
        times.push(started.elapsed());
        last = Some(out);
    }
    (median(times), last.expect("at least one run"))
}

fn main() {
    let settings = CostSettings { price_per_core_hour: Some(0.05), fleet_hosts: Some(40), ..Default::default() };
    let ctx = CostContext::new(settings.resolve().expect("valid settings"), 600.0, 2);
    println!("ops-win report stages, median of {RUNS} runs (one core)");
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "stacks", "figures", "diff SVG", "PNG", "HTML+MIME", "PNG KiB", "SVG KiB"
    );
    for stacks in [1_000, 10_000, 50_000] {
        let before = aggregate(stacks, 1, false);
        let after = aggregate(stacks, 2, true);
        let (t_fig, figures) = time(|| {
            report::compute(
                Side { aggregate: &before, context: &ctx, work: None, intervals: &[] },
                Side { aggregate: &after, context: &ctx, work: None, intervals: &[] },
                None,
                &WinOptions::default(),
            )
            .expect("figures")
        });
        let (t_svg, svg) = time(|| report::differential_svg(&before, 1200.0, &after, 1200.0, "bench").expect("svg"));
        let (t_png, png) = time(|| report::svg_to_png(&svg).expect("png"));
        let win = Win {
            id: Some(1),
            service: "checkout".into(),
            title: "Cache compiled regexes".into(),
            description: "bench".into(),
            shipped_by: None,
            team: None,
            before: Selection::Range { from_ms: before.first_ms, until_ms: before.last_ms, labels: BTreeMap::new() },
            after: Selection::Range { from_ms: after.first_ms, until_ms: after.last_ms, labels: BTreeMap::new() },
            figures,
            created_ms: after.last_ms,
        };
        let from = report::parse_mailbox("hotframe@example.com").expect("address");
        let to = vec!["ops@example.com".to_string()];
        let (t_mail, message) = time(|| {
            let rendered =
                report::render(&win, Some("cid:flamegraph@hotframe"), Some("https://hotframe.example.com/wins/1"));
            report::build_message(&from, &to, &rendered, Some(&png)).expect("message")
        });
        std::hint::black_box(&message);
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        println!(
            "{stacks:>8} {:>12} {:>12} {:>12} {:>12} {:>10.0} {:>10.0}",
            ms(t_fig),
            ms(t_svg),
            ms(t_png),
            ms(t_mail),
            png.bytes.len() as f64 / 1024.0,
            svg.len() as f64 / 1024.0
        );
    }
}
