//! A flow fitted to a 2-D density known in closed form reaches its entropy:
//! the test NLL (nats) of `flows/eight_gaussians.flow` trained on
//! `toy:eight-gaussians` must come within 0.1 nats of the true differential
//! entropy, the lowest NLL any model can have on average; the spline flow
//! `flows/spline_eight_gaussians.flow`, with 2 couplings against 16, within
//! 0.05 nats in half the steps.

use std::process::Command;

/// Trains `flow` on eight gaussians for `steps` at learning rate `lr` (cosine
/// decay, batch 256, seed 1) and returns `flowc eval`'s NLL in nats and the
/// entropy.
fn test_nll(flow: &str, steps: &str, lr: &str) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let bin = env!("CARGO_BIN_EXE_flowc");
    let out = Command::new(bin)
        .args(["train", flow, "--data", "toy:eight-gaussians"])
        .args(["--steps", steps, "--batch", "256", "--lr", lr, "--cosine"])
        .args(["--eval-every", steps, "--seed", "1", "--out"])
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
    (nll, entropy)
}

/// The number of coupling layers of a flow, from `flowc check --format json`.
fn couplings(flow: &str) -> usize {
    let out = Command::new(env!("CARGO_BIN_EXE_flowc"))
        .args(["check", flow, "--format", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = v["layers"].as_array().unwrap();
    layers.iter().filter(|l| l["op"] == "coupling").count()
}

#[test]
fn eight_gaussians_reaches_the_true_entropy() {
    let (nll, entropy) = test_nll("flows/eight_gaussians.flow", "2000", "2e-3");
    assert!(
        nll >= entropy - 0.05,
        "an NLL {nll} below the entropy {entropy} means a bug in the log-density"
    );
    assert!(
        nll - entropy < 0.1,
        "test NLL {nll} nats, true entropy {entropy} nats"
    );
}

#[test]
fn a_spline_flow_reaches_it_with_fewer_layers() {
    let spline = "flows/spline_eight_gaussians.flow";
    assert_eq!(couplings(spline), 2);
    assert_eq!(couplings("flows/eight_gaussians.flow"), 16);
    let (nll, entropy) = test_nll(spline, "1000", "5e-3");
    assert!(
        nll >= entropy - 0.05,
        "an NLL {nll} below the entropy {entropy} means a bug in the log-density"
    );
    assert!(
        nll - entropy < 0.05,
        "test NLL {nll} nats, true entropy {entropy} nats"
    );
}
