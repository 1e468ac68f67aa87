//! Rows per second through `check_input`: open, parse, validate every row and build the plan, for
//! a CSV and a JSONL file of 100,000 generated rows (written once, before anything is timed).
//!
//! `cargo bench --bench input_parse`

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use graph_remediate::{InputOptions, InputSource, Unlisted, check_input};

const SAMPLES: usize = 20;

fn input_parse(c: &mut Criterion) {
    let rows: u64 = if common::benchmarking() { 100_000 } else { 500 };
    let dir = tempfile::tempdir().expect("a temp dir for the inputs");
    let csv = common::write_csv(&dir.path().join("accounts.csv"), rows);
    let jsonl = common::write_jsonl(&dir.path().join("accounts.jsonl"), rows);

    let mut group = c.benchmark_group("input_parse");
    group
        .throughput(Throughput::Elements(rows))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (name, path) in [("csv", &csv), ("jsonl", &jsonl)] {
        let source = InputSource::File(path.clone());
        let options = InputOptions::default();
        let timings = common::Timings::default();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut each = Vec::new();
                for _ in 0..iters {
                    let started = Instant::now();
                    let plan = check_input(black_box(&source), &options, Unlisted::Refuse)
                        .expect("the generated input reads");
                    each.push(started.elapsed());
                    assert!(plan.is_clean() && plan.rows == rows, "every row is good");
                }
                timings.record(each)
            });
        });
        if let Some((median, runs)) = timings.median_rows_per_s(rows, SAMPLES) {
            println!(
                "input_parse/{name}: median {median:.0} rows/s over {runs} parses of {rows} rows"
            );
        }
    }
    group.finish();
}

criterion_group!(benches, input_parse);
criterion_main!(benches);
