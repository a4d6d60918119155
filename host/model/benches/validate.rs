//! Validation cost: `Playbook::load` (parse, structural checks, expression references, the DAG, schema
//! checks against a catalog) of 100,000 steps flat and chained, and of the largest document
//! `POST /api/v1/playbooks` accepts (1 MiB).

mod docs;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use qila_model::Playbook;

fn bench(c: &mut Criterion) {
    let catalog = docs::catalog();
    let mut group = c.benchmark_group("validate");
    group.sample_size(10);
    for (name, source) in [
        ("flat_100k_steps", docs::flat(100_000)),
        ("chain_100k_steps", docs::chain(100_000)),
        ("largest_accepted_1mib", docs::largest(1024 * 1024)),
    ] {
        if let Err(d) = Playbook::load(&source, "bench.yaml", &catalog) {
            panic!("{name} is invalid: {d}");
        }
        group.bench_function(name, |b| {
            b.iter(|| black_box(Playbook::load(black_box(&source), "bench.yaml", &catalog)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
