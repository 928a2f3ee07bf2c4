//! A flow fitted to a 2-D density known in closed form reaches its entropy:
//! the test NLL (nats) of `flows/eight_gaussians.flow` trained on
//! `toy:eight-gaussians` must come within 0.1 nats of the true differential
//! entropy, the lowest NLL any model can have on average.

use std::process::Command;

#[test]
fn eight_gaussians_reaches_the_true_entropy() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let bin = env!("CARGO_BIN_EXE_flowc");
    let out = Command::new(bin)
        .args([
            "train",
            "flows/eight_gaussians.flow",
            "--data",
            "toy:eight-gaussians",
            "--steps",
            "2000",
            "--batch",
            "256",
        ])
        .args([
            "--lr",
            "2e-3",
            "--cosine",
            "--eval-every",
            "2000",
            "--seed",
            "1",
            "--out",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin)
        .arg("eval")
        .arg(&run)
        .args(["--data", "toy:eight-gaussians", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nll = v["nll_nats"].as_f64().unwrap();
    let entropy = flowc::data::toy_entropy("eight-gaussians").unwrap();
    assert_eq!(v["examples"], 10000);
    assert!(
        nll >= entropy - 0.05,
        "an NLL {nll} below the entropy {entropy} means a bug in the log-density"
    );
    assert!(
        nll - entropy < 0.1,
        "test NLL {nll} nats, true entropy {entropy} nats"
    );
}
