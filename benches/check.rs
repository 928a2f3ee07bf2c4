//! How long `flowc check` takes on the library's flows (target: the CIFAR-10
//! flow well under 50 ms). Run: `cargo bench --bench check`.

use criterion::{criterion_group, criterion_main, Criterion};

fn check(c: &mut Criterion) {
    for name in ["realnvp_cifar10", "glow_cifar10", "tabular_gas"] {
        let source = std::fs::read_to_string(format!("flows/{name}.flow")).unwrap();
        c.bench_function(&format!("check {name}"), |b| {
            b.iter(|| {
                let out = flowc::check(std::hint::black_box(&source));
                assert!(out.ok());
                flowc::report::check_table(out.verified.as_ref().unwrap())
            })
        });
    }
    // Close to the most the language allows: 99,999 layers after expansion.
    let big = "flow big { input image(3, 64, 64) net r = resnet(blocks = 1, features = 8) logit(alpha = 0.05) \
               repeat 49999 { coupling affine(mask = checkerboard(even), net = r) coupling affine(mask = checkerboard(odd), net = r) } }";
    c.bench_function("check 99,999 layers", |b| {
        b.iter(|| assert!(flowc::check(std::hint::black_box(big)).ok()))
    });
}

criterion_group!(benches, check);
criterion_main!(benches);
