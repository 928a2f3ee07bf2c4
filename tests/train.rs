//! Training end to end through the real CLI, on data the test makes itself:
//! a run, a killed run, a resumed run that matches an unbroken one, and
//! `eval` / `sample` from the run folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::cli::{flowc, tensors, write_images};

const FLOW: &str = "flow tiny {
    input image(1, 4, 4)
    net r = resnet(blocks = 1, features = 8)
    logit(alpha = 0.05)
    coupling affine(mask = checkerboard(even), net = r)
    coupling affine(mask = checkerboard(odd), net = r)
    squeeze
    coupling affine(mask = channel(even), net = r)
    coupling affine(mask = channel(odd), net = r)
    factor_out
    coupling affine(mask = checkerboard(even), net = r)
    coupling affine(mask = checkerboard(odd), net = r)
}
";

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tiny.flow"), FLOW).unwrap();
        write_images(&dir.path().join("images.npy"), 200);
        Setup { dir }
    }
    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    fn train(&self, out: &str, extra: &[&str]) -> (i32, String, String) {
        let (flow, data, out) = (
            self.p("tiny.flow"),
            format!("npy:{}", self.p("images.npy")),
            self.p(out),
        );
        let mut args = vec![
            "train", &flow, "--data", &data, "--batch", "16", "--lr", "3e-3", "--out", &out,
        ];
        args.extend_from_slice(extra);
        flowc(&args)
    }
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn train_eval_sample_from_the_run_folder() {
    let s = Setup::new();
    let (code, _, err) = s.train("run", &["--steps", "40", "--eval-every", "20"]);
    assert_eq!(code, 0, "{err}");
    let run = PathBuf::from(s.p("run"));
    for f in [
        "model.flow",
        "checkpoint.safetensors",
        "state.json",
        "metrics.jsonl",
        "samples.png",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    assert_eq!(
        std::fs::read_to_string(run.join("model.flow")).unwrap(),
        FLOW
    );
    let m = metrics(&run);
    assert_eq!(m.len(), 40);
    let bpd: Vec<f64> = m
        .iter()
        .map(|l| l["train_bits_per_dim"].as_f64().unwrap())
        .collect();
    assert!(bpd.iter().all(|b| b.is_finite()));
    let first: f64 = bpd[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = bpd[35..].iter().sum::<f64>() / 5.0;
    assert!(
        last < first - 0.1,
        "bits/dim should go down: {first} -> {last}"
    );

    let data = format!("npy:{}", s.p("images.npy"));
    let (code, out, err) = flowc(&["eval", &s.p("run"), "--data", &data, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (nll, bpd, n) = (
        v["nll_nats"].as_f64().unwrap(),
        v["bits_per_dim"].as_f64().unwrap(),
        v["examples"].as_u64().unwrap(),
    );
    assert_eq!(n, 20, "the 10% test split of 200");
    // bits/dim as the paper defines it, from the NLL of data scaled to [0,1).
    let expected = (nll + 16.0 * 256f64.ln()) / (16.0 * 2f64.ln());
    assert!((bpd - expected).abs() < 1e-9);
    assert!(bpd > 0.0 && bpd < 8.0, "{bpd}");
    // Averaging the dequantization noise over draws changes little, and is deterministic.
    let k2 = || {
        let (code, out, err) = flowc(&[
            "eval",
            &s.p("run"),
            "--data",
            &data,
            "--samples",
            "3",
            "--format",
            "json",
        ]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["bits_per_dim"]
            .as_f64()
            .unwrap()
    };
    let averaged = k2();
    assert_eq!(averaged, k2());
    assert!((averaged - bpd).abs() < 0.05, "{averaged} vs {bpd}");

    let png = s.p("grid.png");
    let (code, _, err) = flowc(&[
        "sample",
        &s.p("run"),
        "-n",
        "16",
        "--temperature",
        "0.7",
        "-o",
        &png,
    ]);
    assert_eq!(code, 0, "{err}");
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (4 * 6 + 2, 4 * 6 + 2));
}

#[test]
fn resumed_run_matches_an_unbroken_one() {
    let s = Setup::new();
    let (code, _, err) = s.train("whole", &["--steps", "12", "--eval-every", "6"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = s.train("parts", &["--steps", "6", "--eval-every", "6"]);
    assert_eq!(code, 0, "{err}");
    // Without --resume an existing run is never overwritten.
    let (code, _, err) = s.train("parts", &["--steps", "12"]);
    assert_eq!(code, 2);
    assert!(err.contains("--resume"), "{err}");
    let (code, _, err) = s.train("parts", &["--steps", "12", "--eval-every", "6", "--resume"]);
    assert_eq!(code, 0, "{err}");
    let (a, b) = (
        tensors(Path::new(&s.p("whole"))),
        tensors(Path::new(&s.p("parts"))),
    );
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let diff = va
            .iter()
            .zip(vb)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff <= 1e-6, "{na} differs by {diff}");
    }
    let (ma, mb) = (
        metrics(Path::new(&s.p("whole"))),
        metrics(Path::new(&s.p("parts"))),
    );
    assert_eq!(ma.len(), mb.len());
    assert_eq!(ma[11]["train_bits_per_dim"], mb[11]["train_bits_per_dim"]);
}

#[test]
fn a_killed_run_keeps_its_checkpoint_and_resumes() {
    let s = Setup::new();
    let (flow, data, out) = (
        s.p("tiny.flow"),
        format!("npy:{}", s.p("images.npy")),
        s.p("killed"),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowc"))
        .args([
            "train",
            &flow,
            "--data",
            &data,
            "--batch",
            "16",
            "--lr",
            "3e-3",
            "--steps",
            "100000",
            "--eval-every",
            "1",
            "--eval-examples",
            "4",
            "--out",
            &out,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = PathBuf::from(&out);
    let start = Instant::now();
    while !(run.join("metrics.jsonl").exists() && metrics(&run).len() >= 5) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "training made no progress"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL: possibly in the middle of a save
    child.wait().unwrap();
    // Whatever the kill interrupted, the checkpoint is whole.
    let (code, out_json, err) = flowc(&["eval", &out, "--data", &data, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&out_json).unwrap()["bits_per_dim"]
            .as_f64()
            .unwrap()
            .is_finite()
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
    let step = state["step"].as_u64().unwrap();
    let target = (step + 3).to_string();
    let (code, _, err) = s.train("killed", &["--steps", &target, "--resume"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("trained {target} steps")), "{err}");
    // The steps logged between the checkpoint and the kill were cut back:
    // each step appears once, in order.
    let steps: Vec<u64> = metrics(&run)
        .iter()
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=step + 3).collect::<Vec<_>>());
}

#[test]
fn data_of_the_wrong_shape_is_refused_before_training() {
    let s = Setup::new();
    let flow = s.p("moons.flow");
    std::fs::write(&flow, "flow m { input vector(2) net n = mlp(hidden = 4, layers = 1) coupling affine(mask = alternate(even), net = n) coupling affine(mask = alternate(odd), net = n) }").unwrap();
    let data = format!("npy:{}", s.p("images.npy"));
    let (code, _, err) = flowc(&[
        "train",
        &flow,
        "--data",
        &data,
        "--steps",
        "1",
        "--out",
        &s.p("x"),
    ]);
    assert_eq!(code, 2, "data that does not fit the flow is a data error");
    assert!(
        err.contains("uint8 1x4x4") && err.contains("vector(2)"),
        "{err}"
    );
    assert!(!Path::new(&s.p("x")).join("checkpoint.safetensors").exists());
    std::fs::create_dir(s.p("nothing")).unwrap();
    let (code, _, err) = flowc(&[
        "train",
        &flow,
        "--data",
        "cifar10",
        "--data-dir",
        &s.p("nothing"),
        "--steps",
        "1",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("cifar-10"), "{err}");
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run").display().to_string();
    let (code, _, err) = flowc(&[
        "train",
        "flows/two_moons.flow",
        "--data",
        "toy:two-moons",
        "--steps",
        "200",
        "--lr",
        "3",
        "--clip",
        "0",
        "--eval-every",
        "1",
        "--eval-examples",
        "10",
        "--out",
        &out,
    ]);
    assert_eq!(code, 1);
    // Whichever shows it first, the loss or the evaluation after an update,
    // nothing non-finite is saved.
    assert!(
        err.contains("non-finite")
            && (err.contains("the weights were not updated")
                || err.contains("this step was not saved")),
        "{err}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(&out).join("state.json")).unwrap())
            .unwrap();
    let step = state["step"].as_u64().unwrap();
    assert!(err.contains(&format!("(step {step})")), "{err}");
    // That checkpoint is whole and loads.
    let (code, json, err) = flowc(&["eval", &out, "--data", "toy:two-moons", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["examples"], 10000);
}

/// The CPU kernels reuse scratch buffers across steps without clearing
/// them (`exec::scratch`): a kernel that read a value it had not written
/// would depend on the last user's leftovers. With `FLOWC_POISON_SCRATCH`
/// every reused buffer starts as NaN, so such a read would turn the run's
/// numbers NaN or change them. 48 features put the conditioners on the
/// Winograd path too (its chunks of 128 examples are only partly filled by a
/// batch of 16), beside the direct kernels of the narrow convolutions.
#[test]
fn reused_scratch_buffers_never_leak_into_results() {
    let s = Setup::new();
    let flow = FLOW.replace("features = 8", "features = 48");
    std::fs::write(s.dir.path().join("wide.flow"), flow).unwrap();
    let run = |out: &str, poison: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowc"));
        cmd.args(["train", &s.p("wide.flow"), "--data"])
            .arg(format!("npy:{}", s.p("images.npy")))
            .args(["--batch", "16", "--steps", "4", "--eval-every", "2"])
            .args(["--eval-examples", "20", "--out", &s.p(out)]);
        if poison {
            cmd.env("FLOWC_POISON_SCRATCH", "1");
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (tensors(Path::new(&s.p(out))), metrics(Path::new(&s.p(out))))
    };
    let (clean, clean_log) = run("clean", false);
    let (poisoned, poisoned_log) = run("poisoned", true);
    assert_eq!(clean.len(), poisoned.len());
    for ((name, a), (_, b)) in clean.iter().zip(&poisoned) {
        assert!(a.iter().all(|v| v.is_finite()), "{name} is not finite");
        assert_eq!(a, b, "{name} depends on what a reused buffer held");
    }
    let bits = |log: &[serde_json::Value]| -> Vec<(serde_json::Value, serde_json::Value)> {
        let field = |m: &serde_json::Value, k: &str| m[k].clone();
        let pair = |m| {
            (
                field(m, "train_bits_per_dim"),
                field(m, "test_bits_per_dim"),
            )
        };
        log.iter().map(pair).collect()
    };
    assert_eq!(bits(&clean_log), bits(&poisoned_log));
    assert_eq!(clean_log.len(), 4);
}
